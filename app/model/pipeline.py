"""The task semantics of SiameseUniNLU (DESIGN.md §2): schema -> prompts -> windows -> spans.

One request is an `Extraction` whose `steps()` generator yields model steps (`EncodeText`,
`ScorePrompts`) and receives their results, so a driver can run it alone (`run_steps`) or
interleave many requests and batch their steps (app/serving/batching.py). The pipeline never touches
torch: text states are opaque and logits arrive as numpy arrays.

The schema is walked level by level: all prompts of one level (across every parent chain) go
out as one `ScorePrompts` step, and the output is assembled at the end in ModelScope's
depth-first order.

Deviations from INTERFACE.md: none. Schema detail: an empty mapping `{}` as a node's value is
treated like `null` (a leaf); the ModelScope pipeline crashes on it.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass, field
from math import ceil
from typing import Any

import numpy as np

from app.model.errors import InputError, SchemaError, TooComplex
from app.model.padding import token_batches

MAX_LEN = 384  # tokens per text window
STRIDE = 352  # window start every STRIDE tokens (32 tokens of overlap)
PROMPT_MAX_LEN = 128  # [CLS] prompt [SEP], truncated
THRESHOLD = 0.5  # on the raw logits (ModelScope compares logits, not sigmoid probabilities)

# Limits shared by the server (app/serving/settings.py takes its defaults from here) and the
# synchronous
# driver. Cost is counted in model tokens: every token that goes into a backend call (a text
# window's tokens for EncodeText, window length + prompt length per ScorePrompts row).
MAX_BATCH_TOKENS = 8192  # most padded tokens (rows x longest row) in one backend call
MAX_PROMPT_ROWS = 4096  # most prompt rows of one request
# About 52 s of one pod's worker at the measured 1.3 ms per model token (full-size int8, 2 cores:
# the 3,000-character 10-type request of issue 15, about 38,300 tokens, took 50 s): under the
# default 60 s request timeout. See README "Fair scheduling, deadlines and the cost budget".
MAX_REQUEST_COST = 40000


@dataclass(frozen=True)
class EncodeText:
    """Step: run the text windows through the first 6 layers (token type 0)."""

    windows: list[list[int]]


@dataclass(frozen=True)
class PromptRow:
    text_state: object  # one window's opaque state, as returned by Backend.encode
    prompt_ids: list[int]  # [CLS] prompt [SEP] ids, truncated to 128
    position_offset: int  # prompt position ids start here (the window's length)


@dataclass(frozen=True)
class ScorePrompts:
    """Step: rows through the first 6 layers (token type 1), then the cross 6 layers."""

    rows: list[PromptRow]


Step = EncodeText | ScorePrompts


def row_tokens(row: PromptRow) -> int:
    """A row's length in a padded backend call (and its cost): text window + prompt."""
    return row.position_offset + len(row.prompt_ids)


def step_lengths(step: Step) -> list[int]:
    """Per input of a step, its length in model tokens (what a backend call pads to)."""
    if isinstance(step, EncodeText):
        return [len(w) for w in step.windows]
    if isinstance(step, ScorePrompts):
        return [row_tokens(r) for r in step.rows]
    raise TypeError(f"unknown pipeline step {step!r}")


def step_slice(step: Step, indices: list[int]) -> Step:
    """The part of a step made of the given inputs (a step is executed in pieces)."""
    if isinstance(step, EncodeText):
        return EncodeText([step.windows[i] for i in indices])
    return ScorePrompts([step.rows[i] for i in indices])


@dataclass
class Usage:
    """What a request cost so far: prompt rows scored and model tokens sent to the backend."""

    rows: int = 0
    tokens: int = 0


# ---------------------------------------------------------------------------------------------
# schema


def parse_schema(
    schema: dict | str, max_depth: int | None = None, max_nodes: int | None = None
) -> dict:
    """Validate a schema (a mapping, or its JSON text) and return a normalised copy whose values
    are None (leaf) or a non-empty dict. Raises SchemaError with a message naming the problem."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as err:
            raise SchemaError(f"schema is not valid JSON: {err}") from err
        except RecursionError:
            raise SchemaError("schema JSON is nested too deeply") from None
    if not isinstance(schema, dict):
        raise SchemaError(f"schema must be a JSON object, got {_json_type(schema)}")
    if not schema:
        raise SchemaError("schema is empty: give at least one type to extract")
    count = 0

    def walk(node: dict, path: str, depth: int) -> dict:
        nonlocal count
        if max_depth is not None and depth > max_depth:
            raise SchemaError(f"schema is nested deeper than {max_depth} levels at {path}")
        out = {}
        for key, value in node.items():
            where = f"{path}/{key}" if path else str(key)
            if not isinstance(key, str) or not key.strip():
                raise SchemaError(f"schema type names must be non-empty strings (at {where!r})")
            count += 1
            if max_nodes is not None and count > max_nodes:
                raise SchemaError(f"schema has more than {max_nodes} types")
            if value is None or value == {}:
                out[key] = None
            elif isinstance(value, dict):
                out[key] = walk(value, where, depth + 1)
            else:
                raise SchemaError(
                    f"schema value at {where!r} must be null or an object, got {_json_type(value)}"
                )
        return out

    return walk(schema, "", 1)


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def build_prompt(chain: list[dict], node: str) -> str:
    """The prompt of `node` under the extracted ancestors: `type: span, ` repeated, `node: `."""
    return "".join(f"{item['type']}: {item['span']}, " for item in chain) + f"{node}: "


# ---------------------------------------------------------------------------------------------
# text, windows, spans


@dataclass(frozen=True)
class TokenizedText:
    ids: list[int]
    offsets: np.ndarray  # (n, 2) character offsets into the text
    special: np.ndarray  # (n,) bool: [CLS]/[SEP], which never start or end a span


def tokenize_text(tokenizer, text: str) -> TokenizedText:
    """Once per request, with [CLS]/[SEP], no truncation (long texts are windowed instead)."""
    enc = tokenizer(
        text,
        add_special_tokens=True,
        truncation=False,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        verbose=False,
    )
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    special = np.asarray(enc["special_tokens_mask"], dtype=bool)
    return TokenizedText(list(enc["input_ids"]), offsets, special)


def window_starts(n_tokens: int) -> list[int]:
    """Token index where each window starts: one window up to MAX_LEN tokens, else windows of
    MAX_LEN every STRIDE tokens until the end is covered."""
    if n_tokens <= MAX_LEN:
        return [0]
    return [j * STRIDE for j in range(ceil((n_tokens - MAX_LEN) / STRIDE) + 1)]


def split_windows(ids: list[int]) -> tuple[list[list[int]], int]:
    """The windows, and the prompts' position offset: the window length, i.e. the text length
    for a single window and MAX_LEN when split (ModelScope pads the last window to MAX_LEN)."""
    windows = [ids[s : s + MAX_LEN] for s in window_starts(len(ids))]
    offset = len(ids) if len(windows) == 1 else MAX_LEN
    return windows, offset


def merge_windows(
    n_tokens: int, parts: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token (head, tail) logits over the whole text; where windows overlap, the mean."""
    head = np.zeros(n_tokens, dtype=np.float64)
    tail = np.zeros(n_tokens, dtype=np.float64)
    count = np.zeros(n_tokens, dtype=np.float64)
    for start, (h, t) in zip(window_starts(n_tokens), parts, strict=True):
        end = start + len(h)
        head[start:end] += h
        tail[start:end] += t
        count[start:end] += 1
    return head / count, tail / count


def decode_spans(
    text: str, tokens: TokenizedText, head: np.ndarray, tail: np.ndarray
) -> list[tuple[int, int]]:
    """Each token with head logit > 0.5 starts a span ending at the first token at or after it
    with tail logit > 0.5; special tokens neither start nor end a span. Character offsets,
    sorted."""
    valid = ~tokens.special
    heads = np.flatnonzero((head > THRESHOLD) & valid)
    tails = np.flatnonzero((tail > THRESHOLD) & valid)
    if not len(heads) or not len(tails):
        return []
    pick = np.searchsorted(tails, heads, side="left")
    ok = pick < len(tails)
    starts = tokens.offsets[heads[ok], 0]
    ends = tokens.offsets[tails[pick[ok]], 1]
    return sorted((int(s), int(e)) for s, e in zip(starts, ends, strict=True))


# ---------------------------------------------------------------------------------------------
# one request


@dataclass
class _Node:
    """An extracted chain and what is still to extract under it (None: a leaf)."""

    chain: list[dict]
    schema: dict | None
    kids: list[_Node] = field(default_factory=list)


class Extraction:
    """One request. `steps()` yields Steps and receives their results via send():
    EncodeText -> list of opaque states (one per window), ScorePrompts -> list of (head, tail)
    float32 logits per row (the row's window length); it returns the output list
    [[{"type", "span", "offset"}...], ...] as StopIteration.value."""

    def __init__(
        self,
        tokenizer,
        text: str,
        schema: dict | str,
        output_all_prefix: bool = False,
        max_prompt_rows: int | None = None,
        max_cost: int | None = None,
    ):
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {_json_type(text)}")
        self.tokenizer = tokenizer
        self.text = text
        self.schema = parse_schema(schema)
        self.output_all_prefix = bool(output_all_prefix)
        self.max_prompt_rows = max_prompt_rows
        self.max_cost = max_cost
        self.planned = Usage()  # rows and tokens of the steps yielded so far

    def steps(self) -> Generator[Step, list, list]:
        tokens = tokenize_text(self.tokenizer, self.text)
        windows, offset = split_windows(tokens.ids)
        self._plan(0, sum(len(w) for w in windows))
        states = yield EncodeText(windows)
        root = _Node([], self.schema)
        frontier = [root]
        rows_so_far = 0
        while frontier:
            tasks = [(n, t, sub) for n in frontier for t, sub in n.schema.items()]
            rows_so_far += len(tasks) * len(states)
            if self.max_prompt_rows is not None and rows_so_far > self.max_prompt_rows:
                raise TooComplex(self.max_prompt_rows)
            prompts = [build_prompt(n.chain, t) for n, t, _ in tasks]
            prompt_ids = self.tokenizer(
                prompts, truncation=True, max_length=PROMPT_MAX_LEN, verbose=False
            )["input_ids"]
            rows = [PromptRow(s, ids, offset) for ids in prompt_ids for s in states]
            self._plan(len(rows), sum(map(row_tokens, rows)))
            results = yield ScorePrompts(rows)
            frontier = []
            n_win = len(states)
            for k, (node, type_, sub) in enumerate(tasks):
                head, tail = merge_windows(len(tokens.ids), results[k * n_win : (k + 1) * n_win])
                for start, end in decode_spans(self.text, tokens, head, tail):
                    item = {"type": type_, "span": self.text[start:end], "offset": [start, end]}
                    kid = _Node([*node.chain, item], sub)
                    node.kids.append(kid)
                    if sub is not None:
                        frontier.append(kid)
        return self._collect(root)

    def _plan(self, rows: int, tokens: int) -> None:
        """Account for the next step; a nested level that would pass the cost budget stops the
        request before its rows reach the backend (the admission estimate cannot know how many
        spans an outer level yields)."""
        if self.max_cost is not None and self.planned.tokens + tokens > self.max_cost:
            raise TooComplex.cost(self.planned.tokens + tokens, self.max_cost, certain=True)
        self.planned.rows += rows
        self.planned.tokens += tokens

    def _collect(self, root: _Node) -> list:
        """ModelScope's order: depth first, siblings by schema order then by offset."""
        out: list = []

        def walk(node: _Node) -> None:
            for kid in node.kids:
                if kid.schema is None or self.output_all_prefix:
                    out.append([dict(item) for item in kid.chain])
                if kid.schema is not None:
                    walk(kid)

        walk(root)
        return out


def run_steps(backend, extraction: Extraction, call_tokens: int | None = MAX_BATCH_TOKENS) -> list:
    """The synchronous driver: execute each step as soon as it is yielded, in backend calls of at
    most `call_tokens` padded tokens (as the server does), so peak memory is bounded by a call
    and not by a schema level's row count. None: each step in one call."""
    gen = extraction.steps()
    try:
        step = next(gen)
        while True:
            call = backend.encode if isinstance(step, EncodeText) else backend.score
            lengths = step_lengths(step)
            result: list = [None] * len(lengths)
            for part in token_batches(lengths, call_tokens):
                piece = step_slice(step, part)
                outputs = call(piece.windows if isinstance(piece, EncodeText) else piece.rows)
                for i, out in zip(part, outputs, strict=True):
                    result[i] = out
            step = gen.send(result)
    except StopIteration as stop:
        return stop.value


def predict(
    backend,
    tokenizer,
    text: str,
    schema: dict | str,
    output_all_prefix: bool = False,
    *,
    call_tokens: int | None = MAX_BATCH_TOKENS,
    max_prompt_rows: int | None = MAX_PROMPT_ROWS,
    max_cost: int | None = MAX_REQUEST_COST,
) -> list:
    """One request, start to end, on the calling thread, with the server's default slicing and
    limits (pass None to lift a limit on purpose)."""
    extraction = Extraction(tokenizer, text, schema, output_all_prefix, max_prompt_rows, max_cost)
    return run_steps(backend, extraction, call_tokens)
