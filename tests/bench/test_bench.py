"""The benchmark's pure parts (no timing assertions): the SLO search, agreement, report files, the
request mix, FLOP counts. The load generator's tests are in tests/infra/capacity/test_loadgen.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import agreement, mix, report, stats
from bench.flops import count_request_flops
from bench.stats import Sample

REPO = Path(__file__).resolve().parents[2]


def test_max_rate_under_slo_takes_the_best_step_that_meets_it():
    def step(rps, p95, errors=0):
        return {"sent": 10, "throughput_rps": rps, "p95_s": p95, "errors": errors}

    steps = [step(3, 0.2), step(6, 0.5), step(9, 0.9, errors=1), step(12, 2.5)]
    assert stats.max_rate_under_slo(steps, 1.0)["throughput_rps"] == 6
    assert stats.max_rate_under_slo([step(1, 3.0)], 1.0) is None


def test_agreement_counts_identical_outputs_and_spans():
    item = [{"type": "人物", "span": "谷口清太郎", "offset": [18, 23]}]
    other = [{"type": "人物", "span": "谷口", "offset": [18, 20]}]
    ref = {"a": [item], "b": [item, other], "c": []}
    assert agreement.compare(ref, ref)["identical_outputs"] == 3
    result = agreement.compare(ref, {"a": [item], "b": [item], "c": []})
    assert result["identical_outputs"] == 2
    assert result["span_share_identical"] == pytest.approx(2 / 3)
    assert agreement.compare(ref, {})["span_share_identical"] == 0.0


def test_examples_file_lookup(tmp_path, monkeypatch):
    own = tmp_path / "mine.json"
    own.write_text('{"examples": []}')
    assert mix.find_examples(str(own)) == own
    # By default the project's own examples, inside the repository.
    assert mix.find_examples() == mix.DEFAULT_EXAMPLES == REPO / "app" / "model" / "examples.json"
    with pytest.raises(FileNotFoundError, match=r"examples\.json not found"):
        mix.find_examples(str(tmp_path / "absent.json"))  # no silent fallback to the project's
    monkeypatch.setattr(mix, "DEFAULT_EXAMPLES", tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match=r"examples\.json not found"):
        mix.find_examples()


def test_single_level_mix_of_the_project_examples():
    examples = mix.load_examples(mix.find_examples())
    bodies = mix.single_level_mix(examples)
    assert 0 < len(bodies) < len(examples)
    assert all(all(v is None for v in b["schema"].values()) for b in bodies)
    with pytest.raises(ValueError):
        mix.single_level_mix([e for e in examples if not mix.is_single_level(e["schema"])])


def test_retained_capacity_compares_the_saturated_steps():
    quiet = {"saturated": {"throughput_rps": 8.0}}
    assert stats.retained_capacity(quiet, {"saturated": {"throughput_rps": 4.0}}) == 0.5
    assert stats.retained_capacity(quiet, {"saturated": None}) is None
    assert stats.retained_capacity({}, quiet) is None


def test_flop_figures_count_only_answered_requests():
    from bench.__main__ import flop_figures

    samples = [Sample(0, 0.1, 200, body_index=0), Sample(0, 0.1, 200, body_index=1)]
    samples += [Sample(0, 0.1, 503, body_index=1), Sample(0, 0.1, 0, "timeout", body_index=0)]
    figures = flop_figures(samples, 2.0, body_flops=[10e9, 30e9], peak=100.0)
    assert figures["model_gflops"] == pytest.approx(20.0)  # (10 + 30) GFLOP over 2 s
    assert figures["flop_utilisation_pct"] == pytest.approx(20.0)


def _results():
    steps = [
        {
            **stats.summarise([Sample(0, lat, 200) for lat in (0.1, 0.2, 0.3)], rate, 10.0),
            "mean_batch_size": 2.0,
            "model_gflops": 30.0,
            "flop_utilisation_pct": 20.0,
        }
        for rate in (3.0, 6.0)
    ]
    config = {
        "name": "onnx-int8",
        "ready_s": 4.2,
        "peak_rss_bytes": 600 * 2**20,
        "steps": steps,
        "max_under_slo": steps[-1],
        "agreement": {"summary": "9/9 outputs identical, 100% of spans"},
    }
    return {
        "model": "m",
        "machine": {
            "cpus": 2,
            "cpu_model": "x",
            "matmul_peak_gflops": 150.0,
            "matmul_peak_threads": 2,
        },
        "slo_p95_s": 1.0,
        "common_rate": 3.0,
        "step_seconds": 10.0,
        "mix_size": 9,
        "flops_per_request_gflop": 18.0,
        "configs": [config],
    }


def test_report_writes_table_json_and_png(tmp_path):
    paths = report.write_all(_results(), tmp_path)
    table = paths["table"].read_text(encoding="utf-8")
    assert "| onnx-int8 | 0.30 |" in table  # max throughput under the SLO (3 requests / 10 s)
    assert "9/9 outputs identical" in table and "600" in table
    assert json.loads(paths["json"].read_text())["configs"][0]["name"] == "onnx-int8"
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flops_grow_with_the_text(tiny_model_dir):
    schema = {"人物": None}
    short, long = count_request_flops(
        str(tiny_model_dir),
        [{"text": "我爱北京", "schema": schema}, {"text": "我爱北京" * 20, "schema": schema}],
    )
    assert 0 < short < long
