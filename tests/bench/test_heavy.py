"""The heavy-request scenario (bench/heavy.py) end to end on the tiny checkpoint: it starts a real
server, measures, and writes its figures (no figure is asserted, only that they exist)."""

from __future__ import annotations

import json

from bench import heavy, mix


def test_heavy_body_is_a_long_text_with_a_flat_schema():
    examples = mix.load_examples(mix.find_examples())
    body = heavy.heavy_body(examples, chars=3000, types=10)
    assert len(body["text"]) == 3000
    assert len(body["schema"]) == 10 and all(v is None for v in body["schema"].values())


def test_probe_runs_end_to_end_and_writes_its_figures(tiny_model_dir, tmp_path):
    argv = ["--model", str(tiny_model_dir), "--backend", "torch", "--threads", "1",
            "--repeats", "1", "--chars", "600", "--out", str(tmp_path)]  # fmt: skip
    assert heavy.main(argv) == 0
    (row,) = json.loads((tmp_path / "heavy-probe.json").read_text())["rows"]
    assert row["backend"] == "torch" and row["heavy_status"] == 200
    assert row["short_behind_heavy_s"] > 0 and row["short_after_heavy_client_left_s"] > 0


def test_load_reports_each_request_class(tiny_model_dir, tmp_path):
    argv = ["--mode", "load", "--model", str(tiny_model_dir), "--backend", "torch",
            "--threads", "1", "--chars", "300", "--rate", "2", "--seconds", "1.5",
            "--heavy-every", "1", "--out", str(tmp_path)]  # fmt: skip
    assert heavy.main(argv) == 0
    record = json.loads((tmp_path / "heavy-load.json").read_text())
    classes = {row["class"]: row for row in record["rows"]}
    assert set(classes) == {"short alone", "short with heavy", "heavy", "all"}
    assert classes["heavy"]["ok"] == classes["heavy"]["requests"] > 0
    assert classes["all"]["tokens"] > 0 and classes["all"]["wasted_share"] == 0.0
    assert record["machine"]["logical_cores"] >= 1


def test_the_schedulers_to_compare():
    args = heavy.parse_args(["--scheduler-before", "abc123", "--round-budget-ms", "100, 200"])
    assert heavy.schedulers(args) == [
        ("before (abc123)", None, "abc123"),
        ("after (100 ms)", 100.0, None),
        ("after (200 ms)", 200.0, None),
    ]
    assert heavy.schedulers(heavy.parse_args([])) == [("after", None, None)]
    assert "ROUND_BUDGET_MS" not in heavy.server_env(heavy.parse_args([]))
    assert heavy.server_env(args, 100.0)["ROUND_BUDGET_MS"] == "100"
