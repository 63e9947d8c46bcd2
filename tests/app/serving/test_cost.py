"""The admission estimate (app/serving/cost.py) against what the extraction really sends."""

from __future__ import annotations

from app.model.pipeline import Extraction, parse_schema, run_steps
from app.serving.cost import estimate_cost

TEXT = "青石镇位于浙江省西南部的山区，距县城约四十公里，镇上有一座百年石桥。" * 12


def test_a_flat_schema_costs_exactly_the_estimate(model):
    backend, tokenizer = model
    schema = parse_schema({"人物": None, "地点": None, "组织机构": None})
    estimate = estimate_cost(tokenizer, TEXT, schema)
    extraction = Extraction(tokenizer, TEXT, schema)
    run_steps(backend, extraction)
    assert estimate.windows >= 2 and estimate.rows == 3 * estimate.windows
    assert (estimate.cost, estimate.rows) == (extraction.planned.tokens, extraction.planned.rows)
    assert estimate.bound == estimate.cost


def test_a_nested_schema_costs_at_least_the_estimate_and_at_most_the_bound(model):
    backend, tokenizer = model
    schema = parse_schema({"人物": {"地点": None, "时间": {"事件": None}}, "组织": None})
    estimate = estimate_cost(tokenizer, TEXT[:200], schema)
    extraction = Extraction(tokenizer, TEXT[:200], schema)
    run_steps(backend, extraction)
    assert extraction.planned.rows > estimate.rows  # the random heads find spans to nest under
    assert estimate.cost < extraction.planned.tokens <= estimate.bound
