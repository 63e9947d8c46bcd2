"""The Kubernetes side of `make diff` (infra/review/manifests.py): matching objects across two
renders, helm-diff's section format and order, its context lines, and Secret data masked with its
length. The Secret cases render a small chart of their own with Helm's engine: the project's
chart has no Secret (the registry Secret is a Pulumi resource)."""

from __future__ import annotations

from pathlib import Path

import helm_python
import pytest
import yaml

from infra.review import manifests
from infra.review.manifests import Key, compare, index, line_diff, mask_secrets

SECRET_TEMPLATE = """\
apiVersion: v1
kind: Secret
metadata:
  name: foobar
type: Opaque
{{- with .Values.data }}
data:
  {{- range $key, $value := . }}
  {{ $key }}: {{ $value | b64enc }}
  {{- end }}
{{- end }}
{{- with .Values.stringData }}
stringData:
  {{- toYaml . | nindent 2 }}
{{- end }}
"""


@pytest.fixture(scope="module")
def secret_chart(tmp_path_factory) -> Path:
    chart = tmp_path_factory.mktemp("secret-chart")
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: secrets\nversion: 0.1.0\n")
    (chart / "templates").mkdir()
    (chart / "templates" / "secret.yaml").write_text(SECRET_TEMPLATE)
    return chart


def render(chart: Path, values: dict) -> dict[Key, dict]:
    with helm_python.Chart.load(chart) as loaded:
        files = loaded.render(values, name="foobar", namespace="default")
    documents = [d for text in files.values() for d in yaml.safe_load_all(text) if d]
    return index(documents, "default")


def test_a_rendered_secret_pair_is_masked_as_helm_diff_does(secret_chart):
    """helm-diff's own case (diff/diff_test.go, OnChangeSecretWithByteData): a changed, an
    unchanged, a removed and an added key."""
    old = render(secret_chart, {"data": {"key1": "value1", "key2": "value2", "key3": "value3"}})
    new = render(
        secret_chart, {"data": {"key1": "newValue1_abc", "key2": "value2", "key4": "value4"}}
    )

    (entry,) = compare(old, new)

    text = entry.render()
    assert text.splitlines()[0] == "default, foobar, Secret (v1) has changed:"
    assert [line for line in entry.lines if line.startswith(("-", "+", "    key"))] == [
        "-   key1: '-------- # (6 bytes)'",
        "+   key1: '++++++++ # (13 bytes)'",
        "    key2: 'REDACTED # (6 bytes)'",
        "-   key3: '-------- # (6 bytes)'",
        "+   key4: '++++++++ # (6 bytes)'",
    ]
    for secret in ("value1", "value2", "value3", "value4", "newValue1_abc"):
        assert secret not in text
        assert manifests.base64.b64encode(secret.encode()).decode() not in text


def test_string_data_is_merged_into_data_and_masked(secret_chart):
    old = render(secret_chart, {"stringData": {"token": "hunter2"}})
    new = render(secret_chart, {"stringData": {"token": "hunter2", "extra": "s3cr3t-value"}})

    (entry,) = compare(old, new)

    text = entry.render()
    assert "stringData" not in text and "hunter2" not in text and "s3cr3t-value" not in text
    assert "+   extra: '++++++++ # (12 bytes)'" in entry.lines
    assert "    token: 'REDACTED # (7 bytes)'" in entry.lines
    assert entry.fields == ['+ data.extra: "++++++++ # (12 bytes)"']


def test_an_added_or_removed_secret_is_masked_too(secret_chart):
    secret = render(secret_chart, {"data": {"password": "correct horse"}})
    (added,) = compare({}, secret)
    (removed,) = compare(secret, {})
    assert "+   password: '++++++++ # (13 bytes)'" in added.lines
    assert "-   password: '-------- # (13 bytes)'" in removed.lines
    assert "correct horse" not in added.render() + removed.render()


def test_other_kinds_are_not_masked():
    config = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}
    assert mask_secrets(config, None) == (config, None)


def test_objects_match_by_group_kind_namespace_and_name():
    docs = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "other"}},
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": "a"},
                }
            ],
        },
    ]
    keys = sorted(str(key) for key in index(docs, "ns"))
    assert keys == [
        "ns, a, Deployment (apps)",
        "ns, a, NetworkPolicy (networking.k8s.io)",
        "other, a, Service (v1)",
    ]
    with pytest.raises(ValueError, match="two rendered objects are ns, a, Deployment"):
        index(docs[:1] * 2, "ns")


def test_an_api_version_bump_is_a_change_not_a_removal_and_an_addition():
    old = index(
        [{"apiVersion": "autoscaling/v2beta2", "kind": "HPA", "metadata": {"name": "a"}}], "n"
    )
    new = index([{"apiVersion": "autoscaling/v2", "kind": "HPA", "metadata": {"name": "a"}}], "n")
    (entry,) = compare(old, new)
    assert entry.change == "MODIFY"
    assert entry.fields == ['~ apiVersion: "autoscaling/v2beta2" -> "autoscaling/v2"']


def test_sections_come_changed_then_removed_then_added_each_sorted():
    def obj(kind: str, name: str, replicas: int = 1) -> dict:
        return {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"name": name},
            "spec": {"n": replicas},
        }

    old = index(
        [obj("Service", "b"), obj("Service", "a"), obj("Pod", "gone"), obj("Pod", "z")], "n"
    )
    new = index(
        [obj("Service", "b", 2), obj("Service", "a", 2), obj("Pod", "new"), obj("Pod", "z")], "n"
    )
    entries = compare(old, new)
    assert [(str(e.key), e.change) for e in entries] == [
        ("n, a, Service (v1)", "MODIFY"),
        ("n, b, Service (v1)", "MODIFY"),
        ("n, gone, Pod (v1)", "REMOVE"),
        ("n, new, Pod (v1)", "ADD"),
    ]
    assert entries[0].render().splitlines()[0] == "n, a, Service (v1) has changed:"
    assert entries[2].render().splitlines()[0] == "n, gone, Pod (v1) has been removed:"
    assert entries[3].render().splitlines()[0] == "n, new, Pod (v1) has been added:"


def test_context_keeps_a_few_lines_around_each_change_and_marks_the_rest():
    old = "\n".join(f"line{i}" for i in range(20))
    new = old.replace("line10", "LINE10")
    assert line_diff(old, new, context=2) == [
        "...",
        "  line8",
        "  line9",
        "- line10",
        "+ LINE10",
        "  line11",
        "  line12",
        "...",
    ]
    assert len(line_diff(old, new, context=-1)) == 21  # the whole object


def test_a_field_change_names_its_path_with_odd_keys_quoted():
    old = {"metadata": {"annotations": {"checksum/config": "a"}}, "spec": {"ports": [1]}}
    new = {"metadata": {"annotations": {"checksum/config": "b"}}, "spec": {"ports": [1, 2]}}
    assert manifests.field_changes(old, new) == [
        '~ metadata.annotations["checksum/config"]: "a" -> "b"',
        "+ spec.ports[1]: 2",
    ]


def test_placeholders_replace_sentinels_inside_strings():
    value = {"image": "repo@sha256:bbbb", "list": ["sha256:bbbb"], "n": 3}
    assert manifests.substitute(value, {"sha256:bbbb": "<built>"}) == {
        "image": "repo@<built>",
        "list": ["<built>"],
        "n": 3,
    }


def test_multi_line_strings_diff_line_by_line():
    old = {"data": {"rules": "a: 1\nb: 2\nc: 3\n"}}
    new = {"data": {"rules": "a: 1\nb: 20\nc: 3\n"}}
    (entry,) = compare(index([{"kind": "X", **old}], "n"), index([{"kind": "X", **new}], "n"))
    assert "-     b: 2" in entry.lines and "+     b: 20" in entry.lines
