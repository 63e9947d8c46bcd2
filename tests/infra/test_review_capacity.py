"""The capacity consequence of `make diff` (infra/review/capacity.py), on the prod stack's own
settings and the real capacity record: when it appears, and what each row says for the cases the
end-to-end tests leave out."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from infra.review.capacity import Side, consequence

REPO = Path(__file__).resolve().parents[2]
RECORD = REPO / "infra" / "capacity" / "capacity.json"
CHART_VALUES = REPO / "infra" / "chart" / "values.yaml"


@pytest.fixture
def prod() -> dict:
    """The plain `uninlu:` keys of Pulumi.prod.yaml, as the probe reports them."""
    config = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]
    return {
        key.split(":", 1)[1]: value for key, value in config.items() if key.startswith("uninlu:")
    }


def side(settings: dict | None, record: Path = RECORD) -> Side:
    return Side(settings=settings, capacity_file=record, chart_values=CHART_VALUES)


def rows(section: str) -> dict[str, str]:
    return {
        line[2:36].strip(): line for line in section.splitlines()[2:] if line[:2] in ("~ ", "  ")
    }


def test_nothing_that_capacity_depends_on_changed_means_no_section(prod):
    after = copy.deepcopy(prod)
    after["server"]["logFormat"] = "text"
    after["probes"]["modelLoadTimeoutSeconds"] = 400
    assert consequence("prod", side(prod), side(after)) is None


def test_a_runtime_without_a_record_says_so(prod):
    after = copy.deepcopy(prod)
    after["image"]["runtime"] = "onnx-int8"
    result = consequence("prod", side(prod), side(after))
    assert result is not None and result.problems == []
    row = rows(result.section)["one pod within the SLO"]
    assert row.startswith("~ ") and row.endswith("no record: onnx-int8, 2 CPUs")
    assert "8 texts/s (onnx, 2 CPUs)" in row


def test_cpu_only_and_fixed_replicas(prod):
    cpu_only = copy.deepcopy(prod)
    cpu_only["autoscaling"]["targetTextsPerSecondPerPod"] = None
    result = consequence("prod", side(prod), side(cpu_only))
    assert result is not None
    assert rows(result.section)["per-pod texts target"].endswith("CPU only")

    fixed = copy.deepcopy(prod)
    fixed["autoscaling"] = {"enabled": False}
    fixed["replicas"] = 3
    result = consequence("prod", side(prod), side(fixed))
    assert result is not None
    table = rows(result.section)
    assert table["pods (HPA min to max)"].endswith("fixed 3")
    assert table["per-pod texts target"].endswith("no HPA")
    assert table["most texts/s within the SLO"].endswith("24 (3 pods x 8)")
    assert result.problems == [
        "! prod: the declared peak 25 texts/s is out of reach within the SLO: 3 pods x 8 "
        "texts/s = 24 texts/s at most"
    ]


def test_a_new_measurement_is_a_change_of_its_own(prod, tmp_path):
    remeasured = tmp_path / "capacity.json"
    document = json.loads(RECORD.read_text())
    for record in document["records"]:
        record["texts_per_second"] = 4.0
    remeasured.write_text(json.dumps(document))
    result = consequence("prod", side(prod), side(prod, remeasured))
    assert result is not None
    table = rows(result.section)
    assert table["one pod within the SLO"].startswith("~ ")
    assert table["per-pod texts target"].endswith("5.6 (140 % of 4)")
    assert any("above the measured capacity" in line for line in result.problems)


def test_a_stack_new_in_the_change_has_no_before(prod):
    result = consequence("prod", side(None), side(prod))
    assert result is not None
    assert "(no such stack)" in rows(result.section)["most texts/s within the SLO"]


def test_a_problem_that_was_already_there_says_so(prod):
    before = copy.deepcopy(prod)
    before["autoscaling"]["maxReplicas"] = 2
    after = copy.deepcopy(before)
    after["autoscaling"]["maxReplicas"] = 3
    result = consequence("prod", side(before), side(after))
    assert result is not None
    (line,) = result.problems
    assert line.endswith("(so before this change too)")


def test_the_chart_values_of_each_tree_are_read(prod, tmp_path):
    """The ramp goes through the HPA behaviour of the tree's own chart defaults: a chart edit
    that slows scale-up shows in the ramp rows."""
    values = yaml.safe_load(CHART_VALUES.read_text())
    values["autoscaling"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] = 600
    changed = tmp_path / "values.yaml"
    changed.write_text(yaml.safe_dump(values))
    shutil.copy(RECORD, tmp_path / "capacity.json")
    after = Side(settings=prod, capacity_file=tmp_path / "capacity.json", chart_values=changed)
    result = consequence("prod", side(prod), after)
    assert result is not None
    table = rows(result.section)
    # A 10-minute scale-up window holds the HPA back through most of the ramp: later scaling,
    # the SLO broken for minutes.
    assert table["ramp: scaling starts at"].startswith("~ ")
    assert table["ramp: worst p95, time over SLO"].startswith("~ ")
    assert not table["pods (HPA min to max)"].startswith("~ ")
