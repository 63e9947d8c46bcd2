"""Output agreement of a faster path with the fp32 torch reference, over the examples.

fp32 paths must give identical outputs; int8 paths are judged by the share of identical spans
(an output item is the whole chain of {type, span, offset} from the root down)."""

from __future__ import annotations

import json


def output_items(output: list) -> set[str]:
    """An output as a set of its chains (JSON strings), for span-level comparison."""
    return {json.dumps(chain, ensure_ascii=False, sort_keys=True) for chain in output}


def compare(reference: dict[str, list], candidate: dict[str, list]) -> dict:
    """Both map an example's task name to its output. Missing answers count as disagreement."""
    identical = matched = union = 0
    for task, ref in reference.items():
        got = candidate.get(task)
        if got is None:
            union += len(output_items(ref))
            continue
        identical += got == ref
        a, b = output_items(ref), output_items(got)
        matched += len(a & b)
        union += len(a | b)
    share = matched / union if union else 1.0
    n = len(reference)
    return {
        "examples": n,
        "identical_outputs": identical,
        "span_share_identical": share,
        "summary": f"{identical}/{n} outputs identical, {share:.0%} of spans",
    }
