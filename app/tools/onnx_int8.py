"""Static int8 for the ONNX graphs: activation scales fixed at export time by calibration.

Why: dynamic int8 computes one activation scale per batch tensor at run time, so a request's
logits (and sometimes its spans) changed with the requests it was batched with. Here every
quantised activation has a scale and zero point measured once, on the calibration set (the
project's examples, app/model/examples.json, any examples of the user's own, and the generated
cases of app/tools/cases.py, run through the fp32 graphs), so each token row is quantised on its
own and a request gives the same output alone or in any batch.

Format: QDQ (QuantizeLinear/DequantizeLinear around each MatMul with a constant weight; ONNX
Runtime fuses them into int8 kernels at session start). Weights int8 symmetric per output
channel, activations uint8 asymmetric per tensor (MinMax over the calibration set); the
pointer heads and the attention's activation-by-activation products stay fp32.
"""

from __future__ import annotations

import logging
from pathlib import Path

from app.model.examples import load_examples
from app.tools.cases import generate_cases

log = logging.getLogger(__name__)

CALIBRATION_SEED = 20260
CALIBRATION_CASES = 48
# Calibration runs every recorded feed through a graph that outputs all quantised tensors: feeds
# are cut to a few rows and thinned to a fixed count so that memory and time stay bounded (a
# nested schema can score thousands of prompt rows in one call).
CALIBRATION_ROWS = 4
CALIBRATION_CALLS = 96


class _RecordingSession:
    """Stands in for an InferenceSession: runs it and keeps a copy of every feed, in chunks of
    at most CALIBRATION_ROWS rows."""

    def __init__(self, session):
        self.session = session
        self.feeds: list[dict] = []

    def run(self, outputs, feeds):
        rows = len(next(iter(feeds.values())))
        for start in range(0, rows, CALIBRATION_ROWS):
            self.feeds.append(
                {k: v[start : start + CALIBRATION_ROWS].copy() for k, v in feeds.items()}
            )
        return self.session.run(outputs, feeds)


def _thin(feeds: list[dict], limit: int = CALIBRATION_CALLS) -> list[dict]:
    """At most `limit` feeds, evenly spaced over the recording (deterministic)."""
    if len(feeds) <= limit:
        return feeds
    return [feeds[round(i * (len(feeds) - 1) / (limit - 1))] for i in range(limit)]


def record_feeds(
    model_path: Path, onnx_dir: Path, cases: list[dict]
) -> tuple[list[dict], list[dict]]:
    """(encoder feeds, cross feeds) of every model call the fp32 graphs make for `cases`."""
    from app.model.pipeline import predict
    from app.runtime.onnx_backend import load_onnx_backend

    backend, tokenizer = load_onnx_backend(model_path, onnx_dir=onnx_dir)
    backend.encoder = encoder = _RecordingSession(backend.encoder)
    backend.cross_session = cross = _RecordingSession(backend.cross_session)
    for case in cases:
        predict(backend, tokenizer, case["text"], case["schema"])
    return _thin(encoder.feeds), _thin(cross.feeds)


def calibration_cases(examples: list[dict] | None = None) -> list[dict]:
    """The project's examples, then `examples` (a user's own, when given), then the generated
    calibration cases; each schema cut to its first level: deeper levels feed the same kind of
    rows, but on a random checkpoint their count can explode (a span at every token)."""
    cases = load_examples() + list(examples or [])
    cases += generate_cases(CALIBRATION_CASES, CALIBRATION_SEED)
    return [{**c, "schema": dict.fromkeys(c["schema"])} for c in cases]


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over recorded feeds."""

    def __init__(self, feeds: list[dict]):
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)


def quantize_static_int8(src: Path, dst: Path, feeds: list[dict], exclude: list[str]) -> None:
    """QDQ int8 of `src` into `dst`, calibrated on `feeds`; `exclude` names nodes kept fp32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src),
        str(dst),
        _Reader(feeds),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={
            "MatMulConstBOnly": True,  # weights only: not the attention's score products
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
        },
    )
