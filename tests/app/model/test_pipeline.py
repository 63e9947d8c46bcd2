"""Task semantics on the tiny random checkpoint: the schema walk, batching, the synchronous
driver's slicing and limits, and golden outputs for every example of app/model/examples.json."""

import json
import os
from pathlib import Path

import pytest

from app.model.errors import TooComplex
from app.model.examples import load_examples
from app.model.pipeline import (
    EncodeText,
    Extraction,
    PromptRow,
    ScorePrompts,
    build_prompt,
    decode_spans,
    merge_windows,
    parse_schema,
    predict,
    run_steps,
    split_windows,
    tokenize_text,
)
from tests.app.model.backend_wrappers import OneByOne, Recorder
from tests.app.model.long_text import LONG

EXAMPLES = load_examples()
GOLDEN = Path(__file__).parent / "golden" / "tiny_seed_outputs.json"
BY_TASK = {e["task"]: e for e in EXAMPLES}

# ---------------------------------------------------------------------------------------------
# the schema walk


def _reference_walk(backend, tokenizer, text, schema, output_all_prefix):
    """ModelScope's recursion: depth first, one prompt at a time."""
    tokens = tokenize_text(tokenizer, text)
    windows, offset = split_windows(tokens.ids)
    states = backend.encode(windows)
    out = []

    def level(prefix, node_schema):
        found = []
        for node in node_schema:
            ids = tokenizer([build_prompt(prefix, node)], truncation=True, max_length=128)
            parts = backend.score([PromptRow(s, ids["input_ids"][0], offset) for s in states])
            head, tail = merge_windows(len(tokens.ids), parts)
            for s, e in decode_spans(text, tokens, head, tail):
                found.append([*prefix, {"type": node, "span": text[s:e], "offset": [s, e]}])
        for chain in found:
            children = node_schema[chain[-1]["type"]]
            if children is None:
                out.append(chain)
            else:
                if output_all_prefix:
                    out.append(chain)
                level(chain, children)

    level([], parse_schema(schema))
    return out


@pytest.mark.parametrize("output_all_prefix", [False, True])
@pytest.mark.parametrize(
    "task", ["relation_extraction", "event_extraction", "aspect_sentiment_polarity"]
)
def test_level_batched_walk_equals_depth_first_recursion(
    backend, tokenizer, task, output_all_prefix
):
    example = BY_TASK[task]
    got = predict(backend, tokenizer, example["text"], example["schema"], output_all_prefix)
    expected = _reference_walk(
        backend, tokenizer, example["text"], example["schema"], output_all_prefix
    )
    assert got == expected
    if output_all_prefix:
        assert any(len(chain) == 1 for chain in got)
    assert all(
        len(chain) == 2 for chain in predict(backend, tokenizer, example["text"], example["schema"])
    )


def test_one_prompt_step_per_level_with_every_chain(backend, tokenizer):
    example = BY_TASK["relation_extraction"]
    recorder = Recorder(backend)
    output = predict(recorder, tokenizer, example["text"], example["schema"], call_tokens=None)
    n_windows = len(recorder.windows[0])
    assert len(recorder.windows) == 1  # the text is encoded once for all levels
    assert len(recorder.rows) == 2
    parents = {tuple(json.dumps(i, ensure_ascii=False) for i in c[:1]) for c in output}
    assert len(recorder.rows[1]) >= len(parents) * n_windows


def test_generator_protocol_step_by_step(backend, tokenizer):
    example = BY_TASK["named_entity_recognition"]
    text, schema = example["text"], example["schema"]
    gen = Extraction(tokenizer, text, schema).steps()
    step = next(gen)
    assert isinstance(step, EncodeText)
    assert step.windows == [tokenize_text(tokenizer, text).ids]
    step = gen.send(backend.encode(step.windows))
    assert isinstance(step, ScorePrompts)
    assert len(step.rows) == len(schema)  # one window, one row per type
    assert {r.position_offset for r in step.rows} == {len(tokenize_text(tokenizer, text).ids)}
    with pytest.raises(StopIteration) as stop:
        gen.send(backend.score(step.rows))
    assert stop.value.value
    assert stop.value.value == run_steps(backend, Extraction(tokenizer, text, schema))


def test_empty_text_gives_no_output(backend, tokenizer):
    assert predict(backend, tokenizer, "", {"人物": None}) == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["task"])
def test_batched_outputs_equal_one_by_one(backend, tokenizer, example):
    args = (tokenizer, example["text"], example["schema"], True)
    assert predict(backend, *args) == predict(OneByOne(backend), *args)


# ---------------------------------------------------------------------------------------------
# golden outputs


def _all_outputs(backend, tokenizer):
    return {
        e["task"]: {
            "output": predict(backend, tokenizer, e["text"], e["schema"]),
            "output_all_prefix": predict(backend, tokenizer, e["text"], e["schema"], True),
        }
        for e in EXAMPLES
    }


def test_golden_outputs_of_every_example(backend, tokenizer):
    """Stable outputs on the fixed-seed tiny checkpoint. After a deliberate change of the
    semantics or of the generator, rewrite with UNINLU_UPDATE_GOLDEN=1 and review the diff."""
    outputs = _all_outputs(backend, tokenizer)
    if os.environ.get("UNINLU_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(outputs, ensure_ascii=False, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) == {e["task"] for e in EXAMPLES}
    for task, expected in golden.items():
        assert outputs[task] == expected, task
    # the fixture is useful only if it exercises decoding and recursion
    assert sum(bool(v["output"]) for v in golden.values()) >= len(golden) - 3
    assert any(len(chain) == 2 for v in golden.values() for chain in v["output"])


# ---------------------------------------------------------------------------------------------
# the synchronous driver: slicing and limits


class CallSizes:
    """Wraps a backend and records rows and padded tokens of every call."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.calls: list[tuple[str, int, int]] = []

    def encode(self, windows):
        self.calls.append(("encode", len(windows), len(windows) * max(map(len, windows))))
        return self.inner.encode(windows)

    def score(self, rows):
        width = max(r.position_offset + len(r.prompt_ids) for r in rows)
        self.calls.append(("score", len(rows), len(rows) * width))
        return self.inner.score(rows)


THREE_LEVELS = {"站": {"路": {"省": None}}, "铁路": {"车站": None}}


def test_a_three_level_schema_over_a_long_text_stays_within_the_slice_per_call(backend, tokenizer):
    """Unsliced, a level's rows go out in one call (what peaked at gigabytes); sliced, no call
    holds more than the budget, whatever the level's size, and the output is the same."""
    text = LONG[:700]
    unsliced = CallSizes(backend)
    want = predict(
        unsliced,
        tokenizer,
        text,
        THREE_LEVELS,
        True,
        call_tokens=None,
        max_prompt_rows=None,
        max_cost=None,
    )
    assert max(tokens for kind, _, tokens in unsliced.calls if kind == "score") > 4 * 1024
    sliced = CallSizes(backend)
    got = predict(
        sliced,
        tokenizer,
        text,
        THREE_LEVELS,
        True,
        call_tokens=1024,
        max_prompt_rows=None,
        max_cost=None,
    )
    assert got == want and any(len(chain) == 3 for chain in got)
    assert all(tokens <= 1024 for _, _, tokens in sliced.calls), sliced.calls
    assert sum(rows for k, rows, _ in sliced.calls if k == "score") == sum(
        rows for k, rows, _ in unsliced.calls if k == "score"
    )


def test_the_driver_applies_the_cost_budget_unless_lifted(backend, tokenizer):
    schema = {f"类型{i}": None for i in range(10)}
    with pytest.raises(TooComplex, match=r"above the limit MAX_REQUEST_COST=2000"):
        predict(backend, tokenizer, LONG, schema, max_cost=2000)
    recorder = CallSizes(backend)
    assert predict(recorder, tokenizer, LONG, schema, max_cost=None) == predict(
        backend, tokenizer, LONG, schema, call_tokens=None, max_cost=None
    )
    assert recorder.calls


def test_a_nested_level_over_the_budget_is_stopped_before_its_rows_run(backend, tokenizer):
    """The first level fits; the second would pass the budget: no row of it is executed."""
    extraction = Extraction(tokenizer, LONG[:300], THREE_LEVELS, max_cost=3000)
    recorder = CallSizes(backend)
    with pytest.raises(TooComplex, match="would reach"):
        run_steps(recorder, extraction)
    assert extraction.planned.tokens <= 3000
    scored = sum(rows for k, rows, _ in recorder.calls if k == "score")
    assert scored == extraction.planned.rows == len(THREE_LEVELS)
