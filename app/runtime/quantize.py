"""Dynamic int8 quantisation of the torch model's transformer layers (CPU only).

Why: on CPUs without AVX-512 the linear layers dominate, and int8 weights with int8 activations
(quantised per batch at run time) run them 1.6-3.3x faster at small batches, with no calibration
data needed. The pointer heads and the embeddings stay fp32 (tiny, and the heads decide spans).

torch 2.13 still ships `torch.ao.quantization.quantize_dynamic` (deprecated in favour of torchao,
which is not a dependency here); its deprecation warnings are silenced on purpose.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from app.model.network import SiameseUniNLU


def quantize_dynamic_int8(model: SiameseUniNLU) -> SiameseUniNLU:
    """Swap every nn.Linear of the two transformer stacks for a dynamic int8 linear, in place."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("dynamic int8 quantisation runs on CPU only")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        from torch.ao.quantization import quantize_dynamic

        model.plm.encoder = quantize_dynamic(
            model.plm.encoder, {nn.Linear}, dtype=torch.qint8, inplace=False
        )
        model.crossattention = quantize_dynamic(
            model.crossattention, {nn.Linear}, dtype=torch.qint8, inplace=False
        )
    return model.eval()
