"""Task semantics (DESIGN.md §2) on the tiny random checkpoint: prompts, windows, offsets, the
schema walk, batching, and golden outputs for every example of app/model/examples.json."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from app.model.errors import InputError, SchemaError, TooComplex
from app.model.examples import load_examples
from app.model.pipeline import (
    MAX_LEN,
    STRIDE,
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
    window_starts,
)
from app.runtime.torch_backend import load_backend

EXAMPLES = load_examples()
GOLDEN = Path(__file__).parent / "golden" / "tiny_seed_outputs.json"
BY_TASK = {e["task"]: e for e in EXAMPLES}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_backend(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def backend(loaded):
    return loaded[0]


@pytest.fixture(scope="module")
def tokenizer(loaded):
    return loaded[1]


class Recorder:
    """Wraps a backend and records every step it executes."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.windows: list[list[list[int]]] = []
        self.rows: list[list[PromptRow]] = []

    def encode(self, windows):
        self.windows.append(windows)
        return self.inner.encode(windows)

    def score(self, rows):
        self.rows.append(rows)
        return self.inner.score(rows)


class OneByOne:
    """Executes every window and every row alone: no batching at all."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def encode(self, windows):
        return [self.inner.encode([w])[0] for w in windows]

    def score(self, rows):
        return [self.inner.score([r])[0] for r in rows]


# ---------------------------------------------------------------------------------------------
# schema


def test_parse_schema_normalises_and_accepts_json_text():
    schema = {"人物": {"国籍": None, "职业": {}}, "地点": None}
    assert parse_schema(schema) == {"人物": {"国籍": None, "职业": None}, "地点": None}
    assert parse_schema(json.dumps(schema)) == parse_schema(schema)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got array"),
        ({}, "schema is empty"),
        ({"人物": ["国籍"]}, "at '人物' must be null or an object, got array"),
        ({"人物": {"国籍": "x"}}, "at '人物/国籍' must be null or an object, got string"),
        ({"人物": 3}, "got number"),
        ({" ": None}, "non-empty strings"),
    ],
)
def test_parse_schema_errors_name_the_problem(schema, message):
    with pytest.raises(SchemaError, match=message):
        parse_schema(schema)


def test_parse_schema_limits():
    deep = {"a": {"b": {"c": None}}}
    assert parse_schema(deep, max_depth=3)
    with pytest.raises(SchemaError, match="deeper than 2 levels"):
        parse_schema(deep, max_depth=2)
    with pytest.raises(SchemaError, match="more than 2 types"):
        parse_schema(deep, max_nodes=2)


def test_text_must_be_a_string(tokenizer):
    with pytest.raises(InputError, match="text must be a string"):
        Extraction(tokenizer, 42, {"a": None})


# ---------------------------------------------------------------------------------------------
# prompts


def test_prompt_strings_for_relation_and_event_chains():
    person = {"type": "人物", "span": "谷爱凌", "offset": [32, 35]}
    assert build_prompt([], "人物") == "人物: "
    assert build_prompt([person], "比赛项目(赛事名称)") == "人物: 谷爱凌, 比赛项目(赛事名称): "
    trigger = {"type": "胜负(事件触发词)", "span": "负", "offset": [19, 20]}
    loser = {"type": "败者", "span": "天津泰达", "offset": [5, 9]}
    assert build_prompt([trigger, loser], "胜者") == "胜负(事件触发词): 负, 败者: 天津泰达, 胜者: "


@pytest.mark.parametrize("task", ["relation_extraction", "event_extraction"])
def test_nested_levels_send_the_prompts_of_the_extracted_chains(backend, tokenizer, task):
    example = BY_TASK[task]
    recorder = Recorder(backend)
    chains = predict(
        recorder, tokenizer, example["text"], example["schema"], True, slice_tokens=None
    )
    level1 = [c for c in chains if len(c) == 1]
    assert level1, "the tiny checkpoint should extract something at the first level"
    (root_type, children), *_ = example["schema"].items()
    expected = [
        build_prompt(chain, child) for chain in level1 for child in children if chain[0]["type"]
    ]
    assert expected[0].startswith(f"{root_type}: {level1[0][0]['span']}, ")
    expected_ids = tokenizer(expected, truncation=True, max_length=128)["input_ids"]
    assert len(recorder.rows) == 2  # one step per level (unsliced: one call each)
    assert [r.prompt_ids for r in recorder.rows[1]] == expected_ids
    assert [r.prompt_ids for r in recorder.rows[0]] == tokenizer([f"{root_type}: "])["input_ids"]


def test_prompts_are_truncated_to_128_tokens(backend, tokenizer):
    recorder = Recorder(backend)
    predict(recorder, tokenizer, "短文本", {"长" * 300: None})
    (row,) = recorder.rows[0]
    assert len(row.prompt_ids) == 128
    assert row.prompt_ids[-1] == tokenizer.sep_token_id


# ---------------------------------------------------------------------------------------------
# offsets and span decoding


MIXED = "2024年，谷爱凌 won ABC-Cup 第1名！ 得分188.25分，全角：（ＸＹ） 和  空格。"


def test_tokenized_offsets_point_into_the_text(tokenizer):
    tokens = tokenize_text(tokenizer, MIXED)
    assert tokens.special.tolist() == [True] + [False] * (len(tokens.ids) - 2) + [True]
    pieces = [MIXED[s:e] for s, e in tokens.offsets[1:-1]]
    for piece, token in zip(pieces, tokenizer.convert_ids_to_tokens(tokens.ids[1:-1]), strict=True):
        assert piece, token
        if token != "[UNK]":
            assert piece.lower() == token.removeprefix("##")


def _logits_for(tokens, heads, tails):
    head = np.full(len(tokens.ids), -5.0)
    tail = np.full(len(tokens.ids), -5.0)
    head[heads] = 3.0
    tail[tails] = 3.0
    return head, tail


def test_decoding_gives_character_offsets_over_mixed_scripts(tokenizer):
    tokens = tokenize_text(tokenizer, MIXED)
    wanted = ["ABC-Cup", "谷爱凌", "188.25分", "（ＸＹ）", "2024年", "won"]
    heads, tails = [], []
    for word in wanted:
        begin = MIXED.index(word)
        end = begin + len(word)
        first = next(i for i, (s, _) in enumerate(tokens.offsets) if s == begin and i > 0)
        last = next(i for i, (_, e) in enumerate(tokens.offsets) if e == end and i > 0)
        heads.append(first)
        tails.append(last)
    spans = decode_spans(MIXED, tokens, *_logits_for(tokens, heads, tails))
    assert [MIXED[s:e] for s, e in spans] == sorted(wanted, key=MIXED.index)
    assert spans == sorted(spans)


def test_each_head_ends_at_the_first_tail_at_or_after_it(tokenizer):
    text = "北京欢迎你"
    tokens = tokenize_text(tokenizer, text)  # [CLS] 北 京 欢 迎 你 [SEP]
    spans = decode_spans(text, tokens, *_logits_for(tokens, [1, 3, 5], [2, 3, 4]))
    # 北 -> 京, 欢 -> 欢 (a tail on the head itself), 你 has no tail at or after it
    assert spans == [(0, 2), (2, 3)]


def test_special_tokens_never_start_or_end_a_span(tokenizer):
    text = "北京欢迎你"
    tokens = tokenize_text(tokenizer, text)
    last = len(tokens.ids) - 1
    assert decode_spans(text, tokens, *_logits_for(tokens, [0], [1])) == []
    assert decode_spans(text, tokens, *_logits_for(tokens, [2], [last])) == []
    assert decode_spans(text, tokens, *_logits_for(tokens, [0, 2], [last, 3])) == [(1, 3)]


def test_threshold_is_strictly_above_half_on_raw_logits(tokenizer):
    text = "北京"
    tokens = tokenize_text(tokenizer, text)
    head = np.array([0.0, 0.5, 0.5000001, 0.0])
    tail = np.array([0.0, 0.0, 0.51, 0.0])
    assert decode_spans(text, tokens, head, tail) == [(1, 2)]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["task"])
def test_every_span_is_the_text_at_its_offsets(backend, tokenizer, example):
    for chain in predict(backend, tokenizer, example["text"], example["schema"], True):
        for item in chain:
            start, end = item["offset"]
            assert 0 <= start < end <= len(example["text"])
            assert item["span"] == example["text"][start:end]


def test_spans_in_mixed_text_from_the_model(backend, tokenizer):
    output = predict(backend, tokenizer, MIXED * 3, {"实体": None, "数字": None})
    assert output
    for (item,) in output:
        assert item["span"] == (MIXED * 3)[slice(*item["offset"])]


# ---------------------------------------------------------------------------------------------
# windows


def test_window_starts():
    assert window_starts(5) == [0]
    assert window_starts(MAX_LEN) == [0]
    assert window_starts(MAX_LEN + 1) == [0, STRIDE]
    assert window_starts(1250) == [0, 352, 704, 1056]
    ids = list(range(1250))
    windows, offset = split_windows(ids)
    assert offset == MAX_LEN
    assert [len(w) for w in windows] == [384, 384, 384, 194]
    assert windows[1][0] == 352 and windows[-1][-1] == 1249
    assert split_windows(ids[:100]) == ([ids[:100]], 100)


LONG = (
    "大莱龙铁路位于山东省北部环渤海地区，西起潍坊大家洼车站，全长175公里，总投资11.42亿元。"
    "Rail line 2005 opened; 沿线设有寒亭站、昌邑北站、平度北站、莱州站、招远站。"
) * 14


def _direct_spans(backend, tokenizer, text, node):
    """ModelScope's algorithm written out plainly: each window alone, then for each token the
    mean over the windows that cover it, then the head/tail rule token by token."""
    tokens = tokenize_text(tokenizer, text)
    n = len(tokens.ids)
    prompt = tokenizer([f"{node}: "])["input_ids"][0]
    heads = [[] for _ in range(n)]
    tails = [[] for _ in range(n)]
    for start in range(0, n, STRIDE):
        window = tokens.ids[start : start + MAX_LEN]
        (state,) = backend.encode([window])
        ((h, t),) = backend.score([PromptRow(state, prompt, MAX_LEN)])
        for j in range(len(window)):
            heads[start + j].append(float(h[j]))
            tails[start + j].append(float(t[j]))
        if start + MAX_LEN >= n:
            break
    head = [sum(v) / len(v) for v in heads]
    tail = [sum(v) / len(v) for v in tails]
    spans = []
    for i in range(1, n - 1):
        if head[i] > 0.5:
            for j in range(i, n - 1):
                if tail[j] > 0.5:
                    spans.append((int(tokens.offsets[i][0]), int(tokens.offsets[j][1])))
                    break
    return sorted(spans), np.array(head), np.array(tail)


def test_long_text_is_windowed_and_overlaps_are_averaged(backend, tokenizer):
    assert len(LONG) >= 1200
    recorder = Recorder(backend)
    output = predict(recorder, tokenizer, LONG, {"车站": None}, slice_tokens=None)
    n_tokens = len(tokenize_text(tokenizer, LONG).ids)
    (windows,) = recorder.windows
    assert len(windows) == len(window_starts(n_tokens)) >= 3
    assert all(len(w) == MAX_LEN for w in windows[:-1])
    assert {r.position_offset for r in recorder.rows[0]} == {MAX_LEN}

    spans, head, tail = _direct_spans(backend, tokenizer, LONG, "车站")
    assert [tuple(item["offset"]) for (item,) in output] == spans
    assert spans, "the tiny checkpoint should find spans in the long text"
    merged_head, merged_tail = merge_windows(n_tokens, recorder.inner.score(recorder.rows[0]))
    np.testing.assert_allclose(merged_head, head, atol=1e-5)
    np.testing.assert_allclose(merged_tail, tail, atol=1e-5)
    overlap = range(STRIDE, MAX_LEN)  # tokens covered by windows 0 and 1
    (h0, _), (h1, _) = recorder.inner.score(recorder.rows[0][:2])
    np.testing.assert_allclose(
        merged_head[list(overlap)], (h0[STRIDE:] + h1[: MAX_LEN - STRIDE]) / 2, atol=1e-6
    )


def test_merge_windows_is_the_mean_over_covering_windows():
    n = MAX_LEN + 10  # two windows: 0..383 and 352..393
    first = (np.full(MAX_LEN, 1.0, np.float32), np.full(MAX_LEN, 2.0, np.float32))
    second = (np.full(n - STRIDE, 3.0, np.float32), np.full(n - STRIDE, 6.0, np.float32))
    head, tail = merge_windows(n, [first, second])
    assert head[:STRIDE].tolist() == [1.0] * STRIDE
    assert head[STRIDE:MAX_LEN].tolist() == [2.0] * (MAX_LEN - STRIDE)
    assert head[MAX_LEN:].tolist() == [3.0] * (n - MAX_LEN)
    assert tail[STRIDE:MAX_LEN].tolist() == [4.0] * (MAX_LEN - STRIDE)


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
    output = predict(recorder, tokenizer, example["text"], example["schema"], slice_tokens=None)
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


def test_schema_json_nested_too_deeply_is_a_schema_error():
    with pytest.raises(SchemaError, match="nested too deeply"):
        parse_schema("[" * 100_000)


def test_prompt_row_budget_is_checked_before_a_level_is_built(loaded):
    backend, tokenizer = loaded
    schema = {f"类型{i}": None for i in range(50)}
    steps = Extraction(tokenizer, "小王在北京。", schema, max_prompt_rows=40).steps()
    encode = next(steps)
    assert isinstance(encode, EncodeText)
    with pytest.raises(TooComplex, match="more than 40 prompt rows"):
        steps.send(backend.encode(encode.windows))


# ---------------------------------------------------------------------------------------------
# the synchronous driver: slicing and limits (issue 15)


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
        slice_tokens=None,
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
        slice_tokens=1024,
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
        backend, tokenizer, LONG, schema, slice_tokens=None, max_cost=None
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
