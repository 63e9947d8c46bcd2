"""Export the two halves of SiameseUniNLU to ONNX (fp32, optionally int8) for
app/runtime/onnx_backend.py.

    python -m app.tools.export_onnx --model-path DIR --out DIR [--int8] [--opset N]

The image's build stage runs this (it needs torch); the runtime stage then carries only ONNX
Runtime, the tokenizer and the files written here:
- encoder.onnx: the first half. input_ids, attention_mask, token_type_ids, position_ids (B, T)
  -> states (B, T, H). Used for text windows (type 0) and prompts (type 1).
- cross.onnx: the cross half. states (B, T, H), attention_mask (B, T) -> head, tail (B, T).
- with --int8 also encoder.int8.onnx and cross.int8.onnx (app/tools/onnx_int8.py: static int8 with
  activation scales fixed by calibration, so a row's output never depends on its batch).
The fp32 graphs carry ONNX Runtime's transformer fusions (fused Attention, SkipLayerNormalization,
BiasGelu, EmbedLayerNormalization: `onnxruntime.transformers.optimizer`, model_type "bert").
Each graph is checked against the torch model on a random batch before it is kept.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.model.examples import load_examples
from app.model.network import CROSS_LAYERS, SiameseUniNLU, load_model
from app.runtime.onnx_backend import CROSS_FILE, ENCODER_FILE, ONNX_DIR, int8_name
from app.tools.onnx_fusion import fuse
from app.tools.onnx_int8 import calibration_cases, quantize_static_int8, record_feeds

log = logging.getLogger(__name__)

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
CROSS_INPUTS = ("states", "attention_mask")
DEFAULT_OPSET = 18
# fp32 ONNX against fp32 torch: only kernel-order noise is allowed.
EXPORT_ATOL = 1e-3
MASK_MIN = torch.finfo(torch.float32).min


def _additive(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, 1, 1, T) additive mask: 0 to attend, float32's minimum for padding
    (the values app/model/network.py gives the BERT layers), written as (1 - mask) * min: the form
    the
    attention fusion recognises (onnxruntime/transformers/fusion_attention.py, mask path)."""
    return (1.0 - mask[:, None, None, :].to(torch.float32)) * MASK_MIN


class _Encoder(nn.Module):
    """First half with every input explicit and the padding mask always applied (the torch
    backend skips an all-true mask; an exported graph cannot branch on data)."""

    def __init__(self, model: SiameseUniNLU):
        super().__init__()
        self.embeddings = model.plm.embeddings
        self.encoder = model.plm.encoder

    def forward(self, input_ids, attention_mask, token_type_ids, position_ids):
        hidden = self.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids
        )
        return self.encoder(hidden, attention_mask=_additive(attention_mask)).last_hidden_state


class _Cross(nn.Module):
    """Cross half and the two pointer heads."""

    def __init__(self, model: SiameseUniNLU):
        super().__init__()
        self.cross = model.crossattention
        self.head = model.head_clsf
        self.tail = model.tail_clsf

    def forward(self, states, attention_mask):
        out = self.cross(states, attention_mask=_additive(attention_mask)).last_hidden_state
        return self.head(out).squeeze(-1), self.tail(out).squeeze(-1)


def _sample_inputs(model: SiameseUniNLU, batch: int = 2, length: int = 9):
    """A small padded batch (row 1 shorter) so the traced graph keeps the masking path."""
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(1, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[1, length - 3 :] = 0
    types = torch.zeros(batch, length, dtype=torch.int64)
    positions = torch.arange(length).expand(batch, length).contiguous()
    states = torch.randn(batch, length + 4, model.config.hidden_size, generator=g)
    cross_mask = torch.ones(batch, length + 4, dtype=torch.int64)
    cross_mask[1, length:] = 0
    return (ids, mask, types, positions), (states, cross_mask)


def _export(module: nn.Module, args: tuple, names: tuple, outputs: list[str], path: Path, opset):
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    dims = {name: {0: batch, 1: seq} for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            dynamic_shapes=dims,
            input_names=list(names),
            output_names=outputs,
            opset_version=opset,
            dynamo=True,
            verbose=False,
            external_data=False,
        )
    program.save(str(path))


def _check(module: nn.Module, args: tuple, names: tuple, path: Path, atol: float) -> float:
    """Largest absolute difference between ONNX Runtime and torch on `args`; raises past atol."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})
    with torch.inference_mode():
        want = module(*args)
    want = want if isinstance(want, tuple) else (want,)
    diff = max(float(np.max(np.abs(g - w.numpy()))) for g, w in zip(got, want, strict=True))
    if diff > atol:
        raise RuntimeError(f"{path.name}: ONNX output differs from torch by {diff:.2e} > {atol}")
    return diff


def _pointer_heads(path: Path) -> list[str]:
    """MatMul nodes with a single output column: the head/tail pointer heads. They stay fp32:
    they decide the spans and cost almost nothing."""
    import onnx

    graph = onnx.load(str(path)).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and shapes.get(node.input[1], (0,))[-1] == 1
    ]


def _fuse_and_check(module, args, names, raw: Path, dst: Path, config, layers, attention):
    """Fuse `raw` into `dst` (app/tools/onnx_fusion.py), require every layer's attention fused when
    asked, and check the fused graph against torch."""
    stats = fuse(raw, dst, config.num_attention_heads, config.hidden_size, attention=attention)
    want = layers if attention else 0
    if stats["Attention"] != want or stats["SkipLayerNormalization"] != 2 * layers:
        raise RuntimeError(f"{dst.name}: unexpected fusions {stats} for {layers} layers")
    diff = _check(module, args, names, dst, EXPORT_ATOL)
    log.info("fused %s %s (max |onnx - torch| = %.1e)", dst.name, stats, diff)
    return stats


def export(
    model_path: str | Path,
    out: str | Path,
    int8: bool = False,
    opset=DEFAULT_OPSET,
    examples: list[dict] | None = None,
):
    """Write encoder.onnx and cross.onnx, fused (and with int8, their static int8 versions,
    calibrated on the project's examples, `examples` (a user's own) and the generated cases)
    into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Eager attention: its explicit matmul-softmax is the pattern the Attention fusion matches
    # (the SDPA decomposition is not); the fused op computes the same thing.
    model = load_model(model_path, attn_implementation="eager")
    config = model.config
    enc_args, cross_args = _sample_inputs(model)
    parts = (
        (_Encoder(model).eval(), enc_args, ENCODER_INPUTS, ["states"], ENCODER_FILE),
        (_Cross(model).eval(), cross_args, CROSS_INPUTS, ["head", "tail"], CROSS_FILE),
    )
    layers = {ENCODER_FILE: config.num_hidden_layers - CROSS_LAYERS, CROSS_FILE: CROSS_LAYERS}
    written = []
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        raw = {}
        for module, args, names, outputs, name in parts:
            raw[name] = Path(tmp) / name
            _export(module, args, names, outputs, raw[name], opset)
            _check(module, args, names, raw[name], EXPORT_ATOL)
            _fuse_and_check(module, args, names, raw[name], out / name, config, layers[name], True)
            written.append(out / name)
        if int8:
            feeds = dict(
                zip(
                    (ENCODER_FILE, CROSS_FILE),
                    record_feeds(Path(model_path), out, calibration_cases(examples)),
                    strict=True,
                )
            )
            for module, args, names, _, name in parts:
                unfused_attention = Path(tmp) / ("qdq-src-" + name)
                _fuse_and_check(
                    module, args, names, raw[name], unfused_attention, config, layers[name], False
                )
                qpath = out / int8_name(name)
                quantize_static_int8(
                    unfused_attention, qpath, feeds[name], _pointer_heads(unfused_attention)
                )
                written.append(qpath)
                log.info("quantised %s (%d calibration calls)", qpath, len(feeds[name]))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True, help="checkpoint directory")
    parser.add_argument(
        "--out", help=f"directory for the .onnx files (default: MODEL_PATH/{ONNX_DIR})"
    )
    parser.add_argument("--int8", action="store_true", help="also write int8 versions")
    parser.add_argument(
        "--examples",
        help="an examples.json of your own whose texts join the int8 calibration set (which "
        "always has the project's examples, app/model/examples.json, and generated cases)",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    out = args.out or str(Path(args.model_path) / ONNX_DIR)
    examples = None
    if args.examples:
        examples = load_examples(args.examples)
    for path in export(args.model_path, out, int8=args.int8, opset=args.opset, examples=examples):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
