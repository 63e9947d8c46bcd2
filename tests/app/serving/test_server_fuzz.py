"""Fuzz the OpenAPI schema of a real server with schemathesis: whatever it sends (bodies that fit
the schema and bodies that do not), the answer is never a 5xx and always matches the documented
responses (status code, content type, body schema).

schemathesis' own pytest loader (`from_fixture`) does not run under pytest 9, so the schema's
Hypothesis strategies are driven with `@given` inside the test instead.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_never_500_and_matches_its_schema(server, mode):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/predict/batch", "/health", "/ready"}
    seen: dict[int, int] = {}

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call_and_validate(checks=CHECKS, timeout=60)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    run()
    assert seen and max(seen) < 500, seen
    if mode is GenerationMode.NEGATIVE:
        assert 422 in seen, seen  # the invalid bodies were really sent and refused
    else:
        assert 200 in seen, seen
