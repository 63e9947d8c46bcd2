"""The chart's recording rules and dashboard against a real Prometheus (Debian's `prometheus`) on
loopback, scraping two real servers on the tiny checkpoint with the `namespace` and `pod` labels the
`kubernetes-pods` job adds in a cluster. After a known mix of good, rejected, invalid and (from a
draining pod) 503 requests, every recording rule and every dashboard query returns data through
the HTTP API, and the request-rate, error-ratio and rejection-ratio results match what the client
saw. The only queries without data are the kube-state-metrics and cAdvisor series (KUBE_ONLY).
Both autoscaling engines' texts queries run on the same data: the adapter rule's per pod, KEDA's
for the Deployment; a pod of the same name in another namespace (a second scrape of the busy
server) must count in neither."""

from __future__ import annotations

import asyncio
import collections
import math
import re
import time
from pathlib import Path

import httpx
import pytest
from live_prometheus import PROMETHEUS, Prometheus

from app.contract.metrics import PREDICT_TEXTS_TOTAL
from infra import monitoring
from infra.chart_render import find, render_chart, write_rule_file
from infra.dashboard import PANELS
from tests.app.conftest import ServerProcess
from tests.app.serving.test_server_load import HEAVY

NAMESPACE = "ml"
MIN_WINDOW_SECONDS = 8.0
NS_MATCH = f'namespace="{NAMESPACE}"'
FULLNAME = "nlu-uninlu"
PODS = (f"{FULLNAME}-6d4cf-busy1", f"{FULLNAME}-6d4cf-drain")
OTHER_NAMESPACE = "other"  # the decoy: the busy server scraped again as a pod of another namespace
# Series that only kube-state-metrics and the kubelet's cAdvisor export: no cluster here.
KUBE_ONLY = re.compile(r"\b(kube_[a-z_]+|container_[a-z_]+)\{")
GOOD = {"text": "李雷上周去了苏州博物馆。", "schema": {"人物": None, "地理位置": None}}
BATCH_ITEMS = 2

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus missing: apt-get install prometheus (.ci/run does)"
)


def _predict_mix(url: str, seen: collections.Counter) -> None:
    """3 good, 1 batch, 1 too long (413), 1 invalid schema and 1 invalid JSON (422)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        answers = [client.post("/predict", json=GOOD) for _ in range(3)]
        answers.append(client.post("/predict/batch", json={"items": [GOOD] * BATCH_ITEMS}))
        answers.append(client.post("/predict", json={**GOOD, "text": "长" * 401}))
        answers.append(client.post("/predict", json={**GOOD, "schema": {}}))
        answers.append(
            client.post(
                "/predict", content=b"{not json", headers={"content-type": "application/json"}
            )
        )
    for answer in answers:
        seen[(answer.request.url.path, answer.status_code)] += 1
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 413, 422, 422]


def _burst(url: str, seen: collections.Counter, n: int = 16) -> int:
    """n heavy requests at once against MAX_QUEUE=2: some answered, some refused with 429."""

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(*(client.post("/predict", json=HEAVY) for _ in range(n)))

    answers = asyncio.run(fire())
    for answer in answers:
        seen[("/predict", answer.status_code)] += 1
    assert {a.status_code for a in answers} <= {200, 429}
    return sum(a.status_code == 429 for a in answers)


def _refused_while_draining(url: str, seen: collections.Counter, n: int) -> None:
    for _ in range(n):
        answer = httpx.post(url + "/predict", json=GOOD, timeout=10)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "shutting_down"
        seen[("/predict", 503)] += 1


def _traffic(busy: ServerProcess, draining: ServerProcess, seen: collections.Counter) -> None:
    _predict_mix(busy.url, seen)
    _predict_mix(busy.url, seen)
    _burst(busy.url, seen)
    _refused_while_draining(draining.url, seen, 3)


@pytest.fixture(scope="module")
def live(tiny_model_dir, tmp_path_factory):
    """Prometheus with the chart's rules, two servers, warm-up, then the measured window."""
    directory = tmp_path_factory.mktemp("prometheus")
    manifests = render_chart(
        {"metrics": {"prometheusRule": {"enabled": True}}}, name="nlu", namespace=NAMESPACE
    )
    rule_file = write_rule_file(manifests, directory / "rules.yaml")
    # The busy pod answers 429 beyond 2 queued predictions; the other drains for the whole test.
    busy = ServerProcess(
        Path(tiny_model_dir), directory / "busy.log", MAX_QUEUE="2", MAX_BATCH_ITEMS="2"
    )
    draining = ServerProcess(
        Path(tiny_model_dir),
        directory / "draining.log",
        DRAIN_DELAY_SECONDS="120",
        GRACEFUL_SHUTDOWN_SECONDS="150",
    )
    targets = [(NAMESPACE, PODS[0], busy.port), (NAMESPACE, PODS[1], draining.port)]
    decoy = (OTHER_NAMESPACE, PODS[0], busy.port)
    prometheus = Prometheus(directory, [*targets, decoy], rule_file)
    try:
        busy.wait_ready()
        draining.wait_ready()
        prometheus.wait_ready()
        # Warm-up: every (route, status) series of the window exists and has been scraped before
        # it starts, so rate() sees each request of the window as an increase.
        warmup: collections.Counter = collections.Counter()
        _predict_mix(busy.url, warmup)
        for _ in range(5):
            if _burst(busy.url, warmup):
                break
        draining.terminate()
        _refused_while_draining(draining.url, warmup, 1)
        prometheus.wait_for('uninlu_requests_total{status="503"}')
        prometheus.wait_for('uninlu_requests_total{status="429"}')
        prometheus.wait_scraped_after(time.time(), NAMESPACE)
        start = time.time()
        # A sample inside the window before its traffic.
        prometheus.wait_scraped_after(start, NAMESPACE)
        seen: collections.Counter = collections.Counter()
        _traffic(busy, draining, seen)
        # A window of several scrapes: rate()'s extrapolation (up to a scrape interval at each
        # edge) must stay a small share of it, however fast the traffic ran on this machine.
        time.sleep(max(0.0, start + MIN_WINDOW_SECONDS - time.time()))
        prometheus.wait_scraped_after(time.time(), NAMESPACE)  # a sample after the last request
        end = time.time()
        time.sleep(1.5)  # the rules have been evaluated after `end`
        yield prometheus, manifests, seen, start, end
    finally:
        prometheus.stop()
        busy.stop()
        draining.proc.kill()
        draining.stop()


def _rules(manifests: list[dict]) -> list[dict]:
    rule = next(m for m in manifests if m["kind"] == "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _recorded(rule: dict) -> str:
    """The selector of one recording rule's output in this namespace (quantile rules share a
    name and differ by their label)."""
    labels = {"namespace": NAMESPACE, **rule.get("labels", {})}
    return rule["record"] + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _rule_exprs(manifests: list[dict]) -> dict[str, str]:
    """Expression per recorded name (the first rule of each name)."""
    exprs: dict[str, str] = {}
    for rule in _rules(manifests):
        if "record" in rule:
            exprs.setdefault(rule["record"], rule["expr"])
    return exprs


def _over_window(expr: str, start: float, end: float) -> tuple[str, float]:
    """The rule's expression with its 2m range replaced by the measured window."""
    seconds = math.ceil(end - start)
    return expr.replace("[2m]", f"[{seconds}s]"), seconds


def _by(result: list[dict], *labels: str) -> dict[tuple, float]:
    return {tuple(r["metric"].get(k) for k in labels): float(r["value"][1]) for r in result}


def test_every_recording_rule_has_data_and_evaluates_cleanly(live):
    prometheus, manifests, _, _, end = live
    records = [rule for rule in _rules(manifests) if "record" in rule]
    assert len(records) == 19
    for rule in records:
        assert prometheus.query(_recorded(rule), end), f"nothing recorded: {_recorded(rule)}"
    groups = httpx.get(prometheus.url + "/api/v1/rules").json()["data"]["groups"]
    loaded = [r for g in groups for r in g["rules"]]
    assert len(loaded) == len(_rules(manifests))
    assert all(r["health"] == "ok" for r in loaded), [r for r in loaded if r["health"] != "ok"]


def test_request_rates_match_the_traffic(live):
    prometheus, manifests, seen, start, end = live
    expr, seconds = _over_window(
        _rule_exprs(manifests)["namespace_route_status:uninlu_requests:rate2m"], start, end
    )
    rates = _by(prometheus.query(expr, end), "route", "status")
    # rate() extrapolates the increase between the first and last scrape in the window to the
    # window's edges: at most one 1 s scrape interval at each end.
    stretch = seconds / (seconds - 2.2)
    for (route, status), count in seen.items():
        measured = rates[(route, str(status))] * seconds
        assert count * 0.999 <= measured <= count * stretch, (route, status, count, measured)
    quiet = {
        k: v
        for k, v in rates.items()
        if k[0].startswith("/predict") and (k[0], int(k[1])) not in seen
    }
    assert all(v == 0 for v in quiet.values()), quiet


def test_texts_per_second_match_the_traffic(live):
    prometheus, manifests, seen, start, end = live
    rule = _rule_exprs(manifests)["namespace_route:uninlu_predict_texts:rate2m"]
    expr, seconds = _over_window(rule, start, end)
    stretch = seconds / (seconds - 2.2)
    texts = {"/predict": 1, "/predict/batch": BATCH_ITEMS}
    answered = _by(
        prometheus.query(expr.replace(NS_MATCH, f'{NS_MATCH},status="200"'), end), "route"
    )
    every = _by(prometheus.query(expr, end), "route")
    for route, per_call in texts.items():
        good = seen[(route, 200)] * per_call
        sent = sum(count for (r, _), count in seen.items() if r == route) * per_call
        assert good * 0.999 <= answered[(route,)] * seconds <= good * stretch, route
        # Refused calls count too once their body parsed (not the invalid JSON ones).
        assert good * 0.999 <= every[(route,)] * seconds <= sent * stretch, route
    assert every[("/predict",)] > answered[("/predict",)]  # the 413s and 429s are in it


def _ratio_tolerance(expected: float) -> float:
    return 0.12 * expected + 1e-9  # the two pods' scrapes extrapolate by different factors


def test_error_and_rejection_ratios_match_the_traffic(live):
    prometheus, manifests, seen, start, end = live
    rules = _rule_exprs(manifests)
    total = sum(seen.values())
    expr, _ = _over_window(rules["namespace:uninlu_requests_5xx:ratio_rate2m"], start, end)
    (five,) = prometheus.query(expr, end)
    expected = seen[("/predict", 503)] / total
    assert abs(float(five["value"][1]) - expected) <= _ratio_tolerance(expected)

    expr, _ = _over_window(rules["namespace_status:uninlu_requests_4xx:ratio_rate2m"], start, end)
    by_status = _by(prometheus.query(expr, end), "status")
    for status in (413, 422, 429):
        expected = sum(c for (_, s), c in seen.items() if s == status) / total
        assert abs(by_status[(str(status),)] - expected) <= _ratio_tolerance(expected), status

    expr, _ = _over_window(rules["namespace_reason:uninlu_rejected:ratio_rate2m"], start, end)
    by_reason = _by(prometheus.query(expr, end), "reason")
    for reason, status in (
        ("queue_full", 429),
        ("text_too_long", 413),
        ("invalid_request", 422),
        ("shutting_down", 503),
    ):
        expected = sum(c for (_, s), c in seen.items() if s == status) / total
        assert abs(by_reason[(reason,)] - expected) <= _ratio_tolerance(expected), reason
    assert by_reason[("too_complex",)] == 0


def _panel_queries() -> list[str]:
    return [
        q.expr.replace("$namespace", NAMESPACE).replace("$name", FULLNAME)
        for panel in PANELS
        for q in panel.queries
    ]


def test_every_dashboard_query_returns_data(live):
    prometheus, _, _, _, end = live
    queries = _panel_queries()
    kube_only = [q for q in queries if KUBE_ONLY.search(q)]
    assert 0 < len(kube_only) < len(queries) / 2
    for query in queries:
        result = prometheus.query(query, end)
        if query in kube_only:
            assert result == [], query  # nothing else here exports these series
        else:
            assert result, f"dashboard query without data: {query}"


def _adapter_per_pod(prometheus: Prometheus, start: float, end: float) -> dict[tuple, float]:
    """The adapter rule's metricsQuery with the substitutions it makes when the HPA asks for
    both pods, over the measured window."""
    query = (
        monitoring.predict_texts_rule()["metricsQuery"]
        .replace("<<.Series>>", PREDICT_TEXTS_TOTAL)
        .replace("<<.LabelMatchers>>", f'{NS_MATCH},pod=~"{"|".join(PODS)}"')
        .replace("<<.GroupBy>>", "pod")
    )
    expr, _ = _over_window(query, start, end)
    return _by(prometheus.query(expr, end), "pod")


def test_the_adapter_rule_gives_each_pod_its_texts_per_second(live):
    """The HPA's metric as the Prometheus Adapter asks for it: the rule's seriesQuery finds both
    pods, and its metricsQuery, with the adapter's substitutions for them, gives each pod the
    texts it was offered (whatever the answer) per second."""
    prometheus, _, _, start, end = live
    rule = monitoring.predict_texts_rule()
    found = httpx.get(
        prometheus.url + "/api/v1/series", params={"match[]": rule["seriesQuery"]}
    ).json()["data"]
    assert {series["pod"] for series in found} == set(PODS)
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", PREDICT_TEXTS_TOTAL)
        .replace("<<.LabelMatchers>>", f'{NS_MATCH},pod=~"{"|".join(PODS)}"')
        .replace("<<.GroupBy>>", "pod")
    )
    expr, seconds = _over_window(query, start, end)
    per_pod = _by(prometheus.query(expr, end), "pod")
    stretch = seconds / (seconds - 2.2)
    # The busy pod: twice the mix (3 single calls, a batch of 2, a 413 and a 422 whose bodies
    # parsed; the invalid JSON never did) and 16 burst calls, answered or refused with 429.
    # The draining pod: three 503s.
    expected = {PODS[0]: 2 * (3 + BATCH_ITEMS + 1 + 1) + 16, PODS[1]: 3}
    for pod, texts in expected.items():
        assert texts * 0.999 <= per_pod[(pod,)] * seconds <= texts * stretch, (pod, per_pod)


def test_kedas_query_gives_the_deployments_total_the_adapter_gives_per_pod(live):
    """The query of the ScaledObject's prometheus trigger, as the chart renders it from the
    program's values, run as KEDA runs it (an instant query): one element, the texts per second
    offered to the Deployment, both pods and every answer; the total divided by the pods (what
    the HPA KEDA owns compares with the target) is the average of what the adapter gives each
    pod, and the decoy pod of another namespace counts in neither."""
    prometheus, _, _, start, end = live
    values = {
        "autoscaling": {
            "engine": "keda",
            "keda": {
                "serverAddress": prometheus.url,
                "query": monitoring.deployment_texts_query(NAMESPACE, FULLNAME),
            },
        }
    }
    scaled_object = find(render_chart(values, name="nlu", namespace=NAMESPACE), "ScaledObject")
    (trigger,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "prometheus"]
    assert trigger["metadata"]["serverAddress"] == prometheus.url
    expr, seconds = _over_window(trigger["metadata"]["query"], start, end)

    (total,) = prometheus.query(expr, end)  # the scaler refuses more than one element
    per_pod = _adapter_per_pod(prometheus, start, end)

    texts = float(total["value"][1])
    assert set(per_pod) == {(pod,) for pod in PODS}
    assert texts == pytest.approx(sum(per_pod.values()), rel=1e-9)
    assert texts / len(PODS) == pytest.approx(sum(per_pod.values()) / len(per_pod), rel=1e-9)
    offered = 2 * (3 + BATCH_ITEMS + 1 + 1) + 16 + 3  # both pods, as in the adapter test
    stretch = seconds / (seconds - 2.2)
    assert offered * 0.999 <= texts * seconds <= offered * stretch
    # The decoy is real data: the same pod name in another namespace, with the busy pod's texts.
    decoy = prometheus.query(expr.replace(NS_MATCH, f'namespace="{OTHER_NAMESPACE}"'), end)
    assert float(decoy[0]["value"][1]) > 0
    # As KEDA runs it (the 2 m window, now): one element. Nothing scraped: no element, which
    # the trigger's ignoreNullValues "false" makes a failed read (towards the fallback), not 0.
    assert len(prometheus.query(trigger["metadata"]["query"], end)) == 1
    assert trigger["metadata"]["ignoreNullValues"] == "false"
    assert prometheus.query(monitoring.deployment_texts_query("nowhere", FULLNAME), end) == []
