"""bench/agreement_set.py on a real tiny export: its tallies, and the case generator's forms."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.runtime.onnx_backend import ONNX_DIR, graph_paths, int8_name
from app.tools.cases import FORMS, generate_cases
from app.tools.export_onnx import export
from bench import agreement_set


@pytest.fixture(scope="module")
def model(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the tiny checkpoint with its fused fp32 graphs, and a folder where the "int8"
    names point at those same fp32 graphs (a candidate that must agree exactly)."""
    model = shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("agree") / "model")
    export(model, model / ONNX_DIR)
    same = tmp_path_factory.mktemp("same")
    for path in graph_paths(model / ONNX_DIR, int8=False):
        (same / int8_name(path.name)).symlink_to(path)
    return model, same


def test_generator_is_deterministic_and_covers_every_form():
    cases = generate_cases(50, seed=3)
    assert cases == generate_cases(50, seed=3) and cases != generate_cases(50, seed=4)
    assert {c["task"].rsplit("-", 1)[0] for c in cases} == set(FORMS)
    assert any(isinstance(v, dict) for c in cases for v in c["schema"].values())
    assert max(len(c["text"]) for c in cases) > 2 * 384  # long texts span several windows
    assert any("|" in c["text"] for c in cases)  # classification form


def test_identical_candidate_scores_perfect_agreement(model):
    checkpoint, same = model
    cases = [dict(c, schema=dict.fromkeys(c["schema"])) for c in generate_cases(6, seed=5)]
    tallies = agreement_set.run(checkpoint, cases, int8_dir=same, threads=1)
    total = tallies["all"]
    assert total.cases == 6 and total.identical == 6
    assert total.tp > 0 and total.fp == total.fn == 0
    assert total.head == total.tail == 0.0
    table = agreement_set.table(tallies)
    assert "| all | 6 | 6 |" in table and "| 1.000 | 1.000 | 1.000 | 0.000 | 0.000 |" in table


def test_tally_counts_precision_over_the_candidate_and_recall_over_the_reference():
    tally = agreement_set.Tally()
    a, b, c = ([{"type": t, "span": t, "offset": [0, 1]}] for t in "abc")
    tally.add(want=a + b, got=a + c, head=0.5, tail=0.25)
    assert (tally.tp, tally.fp, tally.fn, tally.identical) == (1, 1, 1, 0)
    assert tally.row("x") == "| x | 1 | 0 | 2 | 0.500 | 0.500 | 0.500 | 0.500 | 0.250 |"


def test_missing_graphs_are_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        agreement_set.main(["--model", str(tmp_path), "--cases", "3"])
    assert "app.tools.export_onnx" in capsys.readouterr().err
