"""Backends execute the two kinds of model step of app/model/pipeline.py on a batch of inputs.

The pipeline sees text states only as opaque objects and logits only as numpy arrays, so a
batcher can mix steps of many requests and another runtime (ONNX) can stand in for torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from app.model.network import SiameseUniNLU, load_model
from app.model.padding import length_groups, padding_of
from app.model.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from app.model.pipeline import PromptRow

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def encode(self, windows: list[list[int]]) -> list[object]:
        """Text windows (token type 0) through the first half; one opaque state per window."""
        ...

    def score(self, rows: list[PromptRow]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Prompts through the first half, then [text ; prompt] through the cross stack; per row
        the (head, tail) float32 logits of the text tokens, padding stripped."""
        ...


def _pad_ids(seqs: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids padded with 0 to the longest row, and the (B, T) bool mask of real tokens."""
    lengths = torch.tensor([len(s) for s in seqs])
    width = int(lengths.max())
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    return ids.to(device), mask.to(device)


class TorchBackend:
    """The network in torch: text states are (length, hidden) tensors on the model's device.
    On CPU every call runs with torch's intra-op thread count (TORCH_THREADS), fixed."""

    def __init__(self, model: SiameseUniNLU, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype
        self.padding_added: dict[str, int] = {}  # stage -> padding tokens of its last call
        precision = "fp16" if dtype == torch.float16 else "fp32"
        self.name = f"torch-{precision}" + ("-cuda" if self.device.type == "cuda" else "")

    @torch.inference_mode()
    def encode(self, windows: list[list[int]]) -> list[object]:
        states: list[object] = [None] * len(windows)
        lengths = [len(w) for w in windows]
        groups = length_groups(lengths)
        self.padding_added["encode"] = padding_of(lengths, groups)
        for group in groups:
            ids, mask = _pad_ids([windows[i] for i in group], self.device)
            positions = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
            hidden = self.model.encode(ids, mask, token_type=0, position_ids=positions)
            for k, i in enumerate(group):
                states[i] = hidden[k, : len(windows[i])]
        return states

    @torch.inference_mode()
    def score(self, rows: list[PromptRow]) -> list[tuple[np.ndarray, np.ndarray]]:
        if not rows:
            return []
        # First half: all prompts at once (they are short and of similar length).
        ids, mask = _pad_ids([r.prompt_ids for r in rows], self.device)
        offsets = torch.tensor([r.position_offset for r in rows], device=self.device)
        positions = offsets[:, None] + torch.arange(ids.shape[1], device=self.device)[None, :]
        positions = positions.masked_fill(~mask, 0)  # padding: any valid index, it is masked
        prompts = self.model.encode(ids, mask, token_type=1, position_ids=positions)
        # Cross half: each row packed as [its text ; its prompt] with no padding in between.
        # Attention in the cross stack has no position terms, so this equals ModelScope's
        # [padded text ; padded prompt] layout up to masked padding, which is never attended.
        text_lens = [int(r.text_state.shape[0]) for r in rows]
        totals = [t + len(r.prompt_ids) for t, r in zip(text_lens, rows, strict=True)]
        results: list = [None] * len(rows)
        groups = length_groups(totals)
        prompt_lens = [len(r.prompt_ids) for r in rows]
        self.padding_added["score"] = padding_of(prompt_lens, [list(range(len(rows)))]) + (
            padding_of(totals, groups)
        )
        for group in groups:
            packed = pad_sequence(
                [
                    torch.cat((rows[i].text_state, prompts[i, : len(rows[i].prompt_ids)]))
                    for i in group
                ],
                batch_first=True,
            )
            lengths = torch.tensor([totals[i] for i in group])
            cross_mask = torch.arange(packed.shape[1])[None, :] < lengths[:, None]
            head, tail = self.model.cross(packed, cross_mask.to(self.device))
            head = head.float().cpu().numpy()
            tail = tail.float().cpu().numpy()
            for k, i in enumerate(group):
                n = text_lens[i]
                results[i] = (head[k, :n].copy(), tail[k, :n].copy())
        return results


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when present."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}, expected auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


def load_backend(
    model_path: str | Path,
    device: str = "auto",
    threads: int | None = None,
    kind: str = "torch",
    onnx_dir: str | Path | None = None,
) -> tuple[Backend, PreTrainedTokenizerBase]:
    """Load the checkpoint directory strictly; half precision on CUDA, float32 on CPU.
    Kinds: torch, onnx, onnx-int8 (ONNX Runtime graphs from app/tools/export_onnx.py, in
    `onnx_dir`, default MODEL_PATH/onnx). Every kind runs `threads` intra-op threads."""
    if kind in ("onnx", "onnx-int8"):
        from app.runtime.onnx_backend import load_onnx_backend

        return load_onnx_backend(
            model_path, threads=threads, int8=kind == "onnx-int8", onnx_dir=onnx_dir
        )
    if kind != "torch":
        raise ValueError(f"unknown backend kind {kind!r}, expected torch, onnx or onnx-int8")
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    model = load_model(model_path, device=dev, dtype=dtype)
    tokenizer = load_tokenizer(model_path)
    backend = TorchBackend(model, dev, dtype)
    log.info("loaded %s from %s (threads=%s)", backend.name, model_path, torch.get_num_threads())
    return backend, tokenizer
