"""The saturated mixed scenario (bench/saturated.py) and the scheduler benchmarks' shared parts
(bench/scheduling.py): the request set, the per-class table, the earlier tree's server command,
and a short replay end to end on the tiny checkpoint (no figure is asserted, only that they
exist and add up)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bench import mix, saturated, scheduling
from bench.scheduling import Outcome


def test_the_request_set_holds_thirty_valid_requests_of_four_classes():
    requests = saturated.request_set(mix.load_examples(mix.find_examples()))
    assert len(requests) == 30
    counts = Counter(r["class"] for r in requests)
    assert set(counts) == {"short", "nested", "long", "long-nested"}
    lengths = [len(r["body"]["text"]) for r in requests]
    assert min(lengths) <= 20 and max(lengths) == 1235
    three_levels = [r for r in requests if r["body"]["schema"] == saturated.THREE_LEVELS]
    assert len(three_levels) == 4 and all(r["class"] == "long-nested" for r in three_levels)


def test_the_class_table_counts_late_504s_and_the_wasted_share():
    outcomes = [
        Outcome("a", "short", 200, 0.1),
        Outcome("b", "short", 504, 1.0, "deadline_exceeded"),  # 1 s of a 60 s limit: early
        Outcome("c", "long", 504, 59.0, "deadline_exceeded"),  # late
        Outcome("d", "long", 429, 0.01, "overloaded"),
        Outcome("e", "long", 200, 20.0),
    ]
    costs = {"a": (200, 100), "b": (504, 0), "c": (504, 3000), "d": (429, 0), "e": (200, 1000)}
    table = scheduling.class_table(outcomes, costs, deadline_s=60)
    assert table["long"]["504"] == table["long"]["504_late"] == 1
    assert (table["short"]["504"], table["short"]["504_late"]) == (1, 0)
    assert table["long"]["429"] == 1 and table["long"]["ok"] == 1
    assert table["long"]["wasted_share"] == pytest.approx(3000 / 4000)
    assert table["all"]["requests"] == 5 and table["all"]["tokens"] == 4100
    rows = [{"scheduler": "after", "class": k, **v} for k, v in table.items()]
    assert "| after | long | 3 |" in scheduling.markdown(rows)


def test_the_earlier_tree_runs_with_this_interpreter_from_its_own_directory(tmp_path):
    command = scheduling.server_command(tmp_path, without_torch=True)
    code = command[-1]
    assert repr(str(tmp_path)) in code and "sys.modules['torch'] = None" in code
    assert "{" not in code  # formatted with {host} and {port} by the server process
    assert "torch" not in scheduling.server_command(tmp_path, without_torch=False)[-1]


def test_a_short_replay_runs_end_to_end(tiny_model_dir, tmp_path):
    argv = ["--model", str(tiny_model_dir), "--backend", "torch", "--threads", "1",
            "--limit", "16", "--passes", "1", "--clients", "3", "--timeout", "60",
            "--out", str(tmp_path)]  # fmt: skip
    assert saturated.main(argv) == 0
    record = json.loads(Path(tmp_path / "saturated-torch.json").read_text())
    rows = {row["class"]: row for row in record["rows"]}
    assert rows["all"]["requests"] == 16 and rows["all"]["tokens"] > 0
    assert sum(rows[k]["requests"] for k in rows if k != "all") == 16
    assert {row["scheduler"] for row in record["rows"]} == {"after"}
