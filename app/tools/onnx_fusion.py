"""ONNX Runtime's transformer fusions on the exported BERT graphs (fp32, exact).

Why: unfused, every attention block is a dozen small ops (reshapes, transposes, a softmax over a
materialised score tensor) and every residual + LayerNorm three more; the fused contrib ops
(Attention with one packed QKV MatMul, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization)
run the same arithmetic in fewer passes over memory.

The optimizer (`onnxruntime.transformers.optimizer.optimize_model`, model_type "bert") matches
the op patterns of the classic BERT export (onnxruntime/transformers/fusion_attention.py). The
torch exporter writes two of them differently; `prepare` rewrites them, exactly, first:
- the padding mask's two unsqueezes come out as one Unsqueeze with axes [1, 2];
- eager attention scales the scores with Mul(scores, 1/sqrt(d)); with Mul also on the mask side
  of the Add the matcher takes the wrong Mul, so the scale becomes Div(scores, sqrt(d)) (exact:
  sqrt(d) is a power of two for BERT's head sizes, checked).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Fused ops we report; the attention count must equal the graph's layer count.
REPORTED = ("Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization")


def _split_mask_unsqueeze(graph, mask_input: str) -> None:
    from onnx import helper, numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for k, node in enumerate(list(graph.node)):
        if node.op_type != "Unsqueeze" or node.input[0] != mask_input:
            continue
        axes = consts.get(node.input[1])
        if axes is None or list(axes) != [1, 2]:
            continue
        names = [f"{mask_input}_unsqueeze_axis{a}" for a in (1, 2)]
        for name in names:
            graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), name))
        first = helper.make_node("Unsqueeze", [mask_input, names[0]], [names[0] + "_out"])
        second = helper.make_node("Unsqueeze", [names[0] + "_out", names[1]], list(node.output))
        first.name, second.name = names
        graph.node.remove(node)
        graph.node.insert(k, second)
        graph.node.insert(k, first)


def _scale_as_div(graph) -> None:
    from onnx import numpy_helper

    producer = {out: n for n in graph.node for out in n.output}
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        add = producer.get(node.input[0])
        if add is None or add.op_type != "Add":
            continue
        for name in add.input:
            mul = producer.get(name)
            if mul is None or mul.op_type != "Mul" or mul.input[1] not in consts:
                continue
            scores = producer.get(mul.input[0])
            if scores is None or scores.op_type != "MatMul":
                continue
            scale = consts[mul.input[1]]
            inverse = (1.0 / scale).astype(scale.dtype)
            if scale.size != 1 or (1.0 / inverse).astype(scale.dtype) != scale:
                continue  # not exactly invertible: leave it (attention stays unfused)
            inv_name = mul.input[1] + "_inverse"
            if inv_name not in consts:
                graph.initializer.append(numpy_helper.from_array(inverse, inv_name))
                consts[inv_name] = inverse
            mul.op_type = "Div"
            mul.input[1] = inv_name


def prepare(path: Path, mask_input: str = "attention_mask") -> None:
    """Rewrite the exported graph in place into the patterns the fusions match (see above)."""
    import onnx

    model = onnx.load(str(path))
    _split_mask_unsqueeze(model.graph, mask_input)
    _scale_as_div(model.graph)
    onnx.save(model, str(path))


def fuse(
    src: Path, dst: Path, num_heads: int, hidden_size: int, attention: bool = True
) -> dict[str, int]:
    """Write the fused graph of `src` to `dst`; returns the counts of the fused ops.

    `attention=False` keeps attention unfused (static int8 quantises the Q/K/V MatMuls, and
    ONNX Runtime's QDQ format has no quantised Attention). The mask stays a 2-D 0/1 input."""
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    prepare(src)
    options = FusionOptions("bert")
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    options.enable_attention = attention
    # opt_level 0: only the Python fusions; ONNX Runtime's own graph optimisations are applied
    # at session start (app/runtime/onnx_backend.py), for the machine that serves.
    model = optimize_model(
        str(src),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=0,
    )
    stats = model.get_fused_operator_statistics()
    model.save_model_to_file(str(dst))
    return {op: int(stats.get(op, 0)) for op in REPORTED}
