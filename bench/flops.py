"""Model FLOPs per request, for a FLOP-utilisation figure against the machine's matmul peak
(app/tools/matmul_peak.py, measured with the machine's figures by infra/capacity/machine.py).

Model FLOPs are counted, not estimated: each body of the mix runs once, alone, through the fp32
torch backend under torch's FlopCounterMode (matmuls and attention, the work that matters). Padding
added by batching is therefore not counted: utilisation measures useful work against the peak.
"""

from __future__ import annotations


def count_request_flops(model_path: str, bodies: list[dict]) -> list[float]:
    """FLOPs of each body, run alone through the fp32 torch backend (one model call per step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from app.model.pipeline import Extraction, run_steps
    from app.runtime.torch_backend import load_backend

    backend, tokenizer = load_backend(model_path, device="cpu", kind="torch")
    counts = []
    for body in bodies:
        counter = FlopCounterMode(display=False)
        with counter:
            run_steps(backend, Extraction(tokenizer, body["text"], body["schema"]))
        counts.append(float(counter.get_total_flops()))
    return counts
