"""Admission cost of a request, before any model compute (the cost budget of issue 15).

Cost is counted in model tokens, the unit app/model/pipeline.py accounts in: a text window's tokens
once (EncodeText), and window length + prompt length for every prompt row (ScorePrompts). The
first schema level is known exactly (its types x the text's windows); a nested level depends on
how many spans the level above yields, which is only bounded: every non-special text token can
start at most one span per chain and type. So the estimate has a certain part (`cost`: text +
first level), which the server refuses when it is above MAX_REQUEST_COST, and an upper bound
(`bound`); the extraction enforces the budget again before each nested level's rows are built.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.model.pipeline import PROMPT_MAX_LEN, build_prompt, split_windows, tokenize_text


@dataclass(frozen=True)
class CostEstimate:
    tokens: int  # text tokens, with [CLS] and [SEP]
    windows: int  # text windows of at most 384 tokens
    rows: int  # prompt rows of the first level (certain)
    encode: int  # model tokens of the text windows (EncodeText), part of cost
    cost: int  # model tokens of the text and the first level (certain)
    bound: int  # model tokens of every level if each chain yielded as many spans as it can


def estimate_cost(tokenizer, text: str, schema: dict) -> CostEstimate:
    """The cost of `text` under a parsed schema (app.model.pipeline.parse_schema), from one
    tokenization of the text and the first level's prompts."""
    ids = tokenize_text(tokenizer, text).ids
    windows, offset = split_windows(ids)
    encode = sum(len(w) for w in windows)
    prompts = [build_prompt([], node) for node in schema]
    prompt_ids = tokenizer(prompts, truncation=True, max_length=PROMPT_MAX_LEN, verbose=False)[
        "input_ids"
    ]
    n_win = len(windows)
    first = sum(n_win * (offset + len(p)) for p in prompt_ids)
    spans = max(len(ids) - 2, 0)  # [CLS] and [SEP] never start a span

    def deeper(level: dict, chains: int) -> int:
        """Upper bound of the rows' tokens of `level` reached by `chains` chains, and below."""
        total = 0
        for sub in level.values():
            total += chains * n_win * (offset + PROMPT_MAX_LEN)
            if sub:
                total += deeper(sub, chains * spans)
        return total

    nested = sum(deeper(sub, spans) for sub in schema.values() if sub)
    rows = len(prompt_ids) * n_win
    return CostEstimate(len(ids), n_win, rows, encode, encode + first, encode + first + nested)
