"""The SiameseUniNLU network and strict loading of the ModelScope checkpoint directory.

The network is assembled from transformers' BERT modules so that the parameter names are the
ones of the published checkpoint (`plm.*`, `crossattention.layer.N.*`, `head_clsf.*`,
`tail_clsf.*`). It is built on the meta device and the checkpoint tensors are assigned in place:
no time is spent on random initialisation that would be overwritten at once.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEmbeddings, BertEncoder, BertPooler

from app.model.errors import CheckpointError
from app.model.tokenizer import VOCAB_FILE

log = logging.getLogger(__name__)

# The architecture fixes the split: the last 6 layers always form the cross stack.
CROSS_LAYERS = 6
CONFIG_FILE = "config.json"
CONFIGURATION_FILE = "configuration.json"
SAFETENSORS_FILE = "model.safetensors"
BIN_FILE = "pytorch_model.bin"
TASK = "siamese-uie"
# Older transformers saved this buffer with the weights; it holds no learned values.
IGNORED_KEYS = frozenset({"plm.embeddings.position_ids"})
_MAX_LISTED = 10
# Attention kernel of the BERT layers: "sdpa" (torch's fused kernels) or "eager" (the explicit
# matmul-softmax of the original implementation). Both take the same additive padding mask.
ATTENTION = "sdpa"


class _Plm(nn.Module):
    """The shared first half (`plm.*`): embeddings, the first layers, and the (unused) pooler
    that the checkpoint carries."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)


def _key_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive key-padding mask (0 to attend, the dtype's minimum for padding) of shape
    (B, 1, 1, T), the form both eager and SDPA attention add to the scores; None when nothing is
    padded so that the fastest kernel can be used."""
    if bool(mask.all()):
        return None
    blocked = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    blocked.masked_fill_(~mask, torch.finfo(dtype).min)
    return blocked[:, None, None, :]


class SiameseUniNLU(nn.Module):
    """Text and prompt share `plm` (the first n-6 layers); [text ; prompt] then runs through the
    6-layer `crossattention` stack; two linear pointer heads score every text token."""

    def __init__(self, config: BertConfig, attn_implementation: str = ATTENTION):
        super().__init__()
        if config.num_hidden_layers <= CROSS_LAYERS:
            raise CheckpointError(
                f"config.json: num_hidden_layers is {config.num_hidden_layers}, but the model "
                f"needs more than {CROSS_LAYERS} (the last {CROSS_LAYERS} form the cross stack)"
            )
        config = copy.deepcopy(config)
        config._attn_implementation = attn_implementation
        plm_config = copy.deepcopy(config)
        plm_config.num_hidden_layers = config.num_hidden_layers - CROSS_LAYERS
        cross_config = copy.deepcopy(config)
        cross_config.num_hidden_layers = CROSS_LAYERS
        self.config = config
        self.plm = _Plm(plm_config)
        self.crossattention = BertEncoder(cross_config)
        self.head_clsf = nn.Linear(config.hidden_size, 1)
        self.tail_clsf = nn.Linear(config.hidden_size, 1)

    def reset_buffers(self, device: torch.device | str = "cpu") -> None:
        """Recreate the non-persistent embedding buffers (left on the meta device by loading)."""
        emb = self.plm.embeddings
        n = self.config.max_position_embeddings
        emb.position_ids = torch.arange(n, device=device).expand((1, -1))
        emb.token_type_ids = torch.zeros((1, n), dtype=torch.long, device=device)

    def encode(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        token_type: int,
        position_ids: torch.Tensor,
    ) -> torch.Tensor:
        """First half: (B, T) ids -> (B, T, H) hidden states; `mask` is (B, T) bool."""
        token_type_ids = torch.full_like(input_ids, token_type)
        hidden = self.plm.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids
        )
        return self.plm.encoder(
            hidden, attention_mask=_key_mask(mask, hidden.dtype)
        ).last_hidden_state

    def cross(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Second half over packed [text ; prompt] rows -> (head, tail) logits, each (B, T)."""
        out = self.crossattention(hidden, attention_mask=_key_mask(mask, hidden.dtype))
        out = out.last_hidden_state
        return self.head_clsf(out).squeeze(-1), self.tail_clsf(out).squeeze(-1)


def read_config(model_dir: Path) -> BertConfig:
    """config.json (HF BERT layout) and configuration.json (ModelScope task file), validated."""
    data = _read_json(model_dir / CONFIG_FILE)
    if data.get("model_type", "bert") != "bert":
        raise CheckpointError(
            f"{model_dir / CONFIG_FILE}: model_type is {data.get('model_type')!r}, expected 'bert'"
        )
    try:
        config = BertConfig(**{k: v for k, v in data.items() if k != "model_type"})
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{model_dir / CONFIG_FILE}: invalid BERT config: {err}") from err
    if config.hidden_size % config.num_attention_heads:
        raise CheckpointError(
            f"{model_dir / CONFIG_FILE}: hidden_size {config.hidden_size} is not a multiple of "
            f"num_attention_heads {config.num_attention_heads}"
        )
    if config.num_hidden_layers <= CROSS_LAYERS:
        raise CheckpointError(
            f"{model_dir / CONFIG_FILE}: num_hidden_layers is {config.num_hidden_layers}, "
            f"the model needs at least {CROSS_LAYERS + 1} (the last {CROSS_LAYERS} are the "
            "cross stack)"
        )
    task_file = _read_json(model_dir / CONFIGURATION_FILE)
    task = task_file.get("task")
    if task != TASK:
        raise CheckpointError(
            f"{model_dir / CONFIGURATION_FILE}: task is {task!r}, expected {TASK!r} "
            "(is this the SiameseUniNLU model directory?)"
        )
    return config


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"missing file {path.name} in model directory {path.parent}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read JSON: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def weights_file(model_dir: Path) -> Path:
    """model.safetensors when present (memory-mapped, no pickle at all), else pytorch_model.bin."""
    for name in (SAFETENSORS_FILE, BIN_FILE):
        if (model_dir / name).is_file():
            return model_dir / name
    raise CheckpointError(
        f"missing weights in model directory {model_dir}: expected {SAFETENSORS_FILE} or {BIN_FILE}"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only: safetensors, or torch.load with weights_only (never runs pickled code)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                # Legacy (non-zip) torch format cannot be memory-mapped.
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure is a bad checkpoint, reported by file name
        raise CheckpointError(f"{path}: cannot read weights: {err}") from err
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{path}: expected a flat mapping of parameter names to tensors")
    return state


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def check_state_dict(expected: dict[str, torch.Tensor], state: dict, source: Path) -> None:
    """Strict: every missing key, unexpected key and shape mismatch is named in the error."""
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - IGNORED_KEYS)
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    wrong = [
        f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        for k, v in sorted(expected.items())
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        problems.append(f"shape mismatch: {_listed(wrong)}")
    if problems:
        raise CheckpointError(
            f"{source}: checkpoint does not fit the model: " + "; ".join(problems)
        )


def load_model(
    model_dir: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = ATTENTION,
) -> SiameseUniNLU:
    """Build the network without initialising it and assign the checkpoint's tensors."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory {model_dir} does not exist")
    config = read_config(model_dir)
    if not (model_dir / VOCAB_FILE).is_file():
        raise CheckpointError(f"missing file {VOCAB_FILE} in model directory {model_dir}")
    path = weights_file(model_dir)
    state = read_state_dict(path)
    with torch.device("meta"):
        model = SiameseUniNLU(config, attn_implementation)
    expected = model.state_dict()
    check_state_dict(expected, state, path)
    tensors = {k: state[k].to(dtype) for k in expected}
    model.load_state_dict(tensors, strict=True, assign=True)
    model.reset_buffers()
    return model.to(device).eval()
