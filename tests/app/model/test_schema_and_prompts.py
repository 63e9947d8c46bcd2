"""Task semantics on the tiny random checkpoint: schema parsing and its limits, and the prompts
built for each level."""

import json

import pytest

from app.model.errors import InputError, SchemaError, TooComplex
from app.model.examples import load_examples
from app.model.pipeline import (
    EncodeText,
    Extraction,
    build_prompt,
    parse_schema,
    predict,
)
from tests.app.model.backend_wrappers import Recorder

EXAMPLES = load_examples()
BY_TASK = {e["task"]: e for e in EXAMPLES}

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
        recorder, tokenizer, example["text"], example["schema"], True, call_tokens=None
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
