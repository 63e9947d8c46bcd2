"""The model server under the benchmark: infra/capacity/server.py's child process, plus the
batch-size histogram and the token counters scraped from its /metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.capacity import server

BATCH_SIZE_METRIC = "uninlu_batch_size"
# Tokens in backend calls by stage (encode | score) and kind (real | padded), from
# app/serving/batching.py.
TOKENS_METRIC = "uninlu_backend_tokens_total"


class ServerProcess(server.ServerProcess):
    """The server under test (see infra.capacity.server.ServerProcess), with its counters."""

    def counters(self) -> dict:
        """The bench's counters from one /metrics scrape (parse_counters); empty figures when
        the server exports none (the peer has no /metrics)."""
        try:
            response = httpx.get(self.base_url + "/metrics", timeout=10)
        except httpx.HTTPError:
            return parse_counters("")
        return parse_counters(response.text if response.status_code == 200 else "")


def parse_counters(text: str) -> dict:
    """From Prometheus text: `batch` = (sum, count) of the batch-size histogram, whose deltas
    give a step's mean batch size, and `tokens` = {(stage, kind): count} of backend tokens, whose
    deltas give the padded share."""
    total = count = 0.0
    tokens: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == BATCH_SIZE_METRIC + "_sum":
                total += sample.value
            elif sample.name == BATCH_SIZE_METRIC + "_count":
                count += sample.value
            elif sample.name == TOKENS_METRIC:
                key = (sample.labels.get("stage", ""), sample.labels.get("kind", ""))
                tokens[key] = tokens.get(key, 0.0) + sample.value
    return {"batch": (total, count), "tokens": tokens}


def padded_share(before: dict, after: dict) -> dict[str, float | None]:
    """Share of padded tokens in backend calls between two scrapes, per stage and overall
    (`all`); None where no token was counted (or the server does not export the counter)."""
    delta = {k: v - before["tokens"].get(k, 0.0) for k, v in after["tokens"].items()}
    shares: dict[str, float | None] = {}
    for stage in sorted({s for s, _ in delta} | {"all"}):
        padded = sum(v for (s, k), v in delta.items() if k == "padded" and stage in (s, "all"))
        real = sum(v for (s, k), v in delta.items() if k == "real" and stage in (s, "all"))
        shares[stage] = padded / (padded + real) if padded + real > 0 else None
    return shares
