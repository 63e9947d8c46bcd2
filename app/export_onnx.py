"""Export the two halves of SiameseUniNLU to ONNX (fp32, optionally int8) for app/onnx_backend.py.

    python -m app.export_onnx --model-path DIR --out DIR [--int8] [--opset N]

The image's build stage runs this (it needs torch); the runtime stage then carries only ONNX
Runtime, the tokenizer and the files written here:
- encoder.onnx: the first half. input_ids, attention_mask, token_type_ids, position_ids (B, T)
  -> states (B, T, H). Used for text windows (type 0) and prompts (type 1).
- cross.onnx: the cross half. states (B, T, H), attention_mask (B, T) -> head, tail (B, T).
- with --int8 also encoder.int8.onnx and cross.int8.onnx: dynamic int8 (weights quantised
  per channel ahead of time, activations at run time), ONNX Runtime's CPU recipe for BERT.
Each graph is checked against the torch model on a random batch before it is kept.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.model import SiameseUniNLU, load_model
from app.onnx_backend import CROSS_FILE, ENCODER_FILE, ONNX_DIR, int8_name

log = logging.getLogger(__name__)

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
CROSS_INPUTS = ("states", "attention_mask")
DEFAULT_OPSET = 18
# fp32 ONNX against fp32 torch: only kernel-order noise is allowed.
EXPORT_ATOL = 1e-3
MASK_MIN = torch.finfo(torch.float32).min


def _additive(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, 1, 1, T) additive mask: 0 to attend, float32's minimum for padding
    (the form app/model.py gives the BERT layers)."""
    blocked = torch.zeros(mask.shape, dtype=torch.float32).masked_fill(mask == 0, MASK_MIN)
    return blocked[:, None, None, :]


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
    """MatMul nodes with a single output column: the head/tail pointer heads. They stay fp32
    (as in app/quantize.py): they decide the spans and cost almost nothing."""
    import onnx

    graph = onnx.load(str(path)).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and shapes.get(node.input[1], (0,))[-1] == 1
    ]


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8: weights of MatMul/Gemm quantised per channel, activations per batch;
    the pointer heads stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_exclude=_pointer_heads(src),
    )


def export(model_path: str | Path, out: str | Path, int8: bool = False, opset=DEFAULT_OPSET):
    """Write encoder.onnx and cross.onnx (and their int8 versions) into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model_path)
    enc_args, cross_args = _sample_inputs(model)
    written = []
    for module, args, names, outputs, name in (
        (_Encoder(model).eval(), enc_args, ENCODER_INPUTS, ["states"], ENCODER_FILE),
        (_Cross(model).eval(), cross_args, CROSS_INPUTS, ["head", "tail"], CROSS_FILE),
    ):
        path = out / name
        _export(module, args, names, outputs, path, opset)
        diff = _check(module, args, names, path, EXPORT_ATOL)
        log.info("exported %s (max |onnx - torch| = %.1e)", path, diff)
        written.append(path)
        if int8:
            qpath = out / int8_name(name)
            quantize_int8(path, qpath)
            written.append(qpath)
            log.info("quantised %s", qpath)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True, help="checkpoint directory")
    parser.add_argument(
        "--out", help=f"directory for the .onnx files (default: MODEL_PATH/{ONNX_DIR})"
    )
    parser.add_argument("--int8", action="store_true", help="also write int8 versions")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    out = args.out or str(Path(args.model_path) / ONNX_DIR)
    for path in export(args.model_path, out, int8=args.int8, opset=args.opset):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
