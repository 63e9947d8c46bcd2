"""Length grouping of rows for padded batches, shared by the torch and ONNX backends.

Kept free of torch so that the ONNX backend (and the lean image without torch) can use it.
"""

from __future__ import annotations

# Padding budget per executed batch: rows are grouped by length so that padding every group to
# its longest row adds at most this share of extra tokens (mixed batches from the batcher would
# otherwise pad short texts to the longest window).
PAD_WASTE = 0.25


def length_groups(lengths: list[int], waste: float = PAD_WASTE) -> list[list[int]]:
    """Indices grouped by similar length, shortest first; within a group padding to the longest
    member costs at most `waste` of the group's real tokens."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        n = lengths[i]
        if current and n * (len(current) + 1) > (1 + waste) * (total + n):
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += n
    if current:
        groups.append(current)
    return groups


def token_batches(lengths: list[int], budget: int | None) -> list[list[int]]:
    """Indices cut into backend calls of at most `budget` padded tokens (rows x longest row),
    shortest first so that rows of similar length share a call; a single row longer than the
    budget goes alone. `budget=None`: everything in one call, in the given order."""
    if budget is None:
        return [list(range(len(lengths)))] if lengths else []
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    calls: list[list[int]] = []
    current: list[int] = []
    for i in order:  # sorted: the row being added is the longest so far
        if current and lengths[i] * (len(current) + 1) > budget:
            calls.append(current)
            current = []
        current.append(i)
    if current:
        calls.append(current)
    return calls


def padding_of(lengths: list[int], groups: list[list[int]]) -> int:
    """Padding tokens a backend feeds when each group is padded to its longest member."""
    return sum(len(g) * max(lengths[i] for i in g) - sum(lengths[i] for i in g) for g in groups)
