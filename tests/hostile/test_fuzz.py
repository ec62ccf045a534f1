"""Schemathesis against the served OpenAPI schema (issues 5, 12 A.4): no route answers a 5xx,
on SQLite and on PostgreSQL.

Every operation of ``/openapi.json`` gets positive and negative (schema-violating) cases, sent
with and without a valid key. Bounded: ``MAX_EXAMPLES`` per operation and mode for uploads,
``MAX_EXAMPLES_NO_BODY`` for operations without a body (cheap; enough to draw the 21-digit
``offset`` that used to overflow SQLite's INTEGER, issue 12 A.4).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from utils.factories import make_tenant

MAX_EXAMPLES = 8
MAX_EXAMPLES_NO_BODY = 60
# 429 kinds that would stop the fuzzer's calls from reaching the routes at all.
THROTTLES = {"auth-rate-limited", "rate-limited"}


def test_fuzz_every_route_no_server_errors(fuzz_stack):
    hostile_stack = fuzz_stack
    key = make_tenant(hostile_stack.database_url)[1]
    schema = schemathesis.openapi.from_url(hostile_stack.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/adaptations", "/adaptations/{adaptation_id}",
                                              "/classify/{adapter_id}"}
    failures: list[tuple] = []
    throttled: list[tuple] = []
    calls = 0
    for op in operations:
        examples = MAX_EXAMPLES if op.method.upper() in ("POST", "PUT", "PATCH") \
            else MAX_EXAMPLES_NO_BODY
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case):  # noqa: ANN001
                nonlocal calls
                for headers in ({"Authorization": f"Bearer {key}"}, {}):
                    calls += 1
                    resp = case.call(base_url=hostile_stack.base_url, headers=headers, timeout=30)
                    if resp.status_code == 429 and resp.headers.get("content-type", "").startswith(
                            "application/problem+json") and resp.json().get("kind") in THROTTLES:
                        throttled.append((case.method, case.path))
                    if resp.status_code >= 500 and not (case.path == "/readyz"
                                                        and resp.status_code == 503):
                        failures.append((case.method, case.path, case.query,
                                         resp.status_code, resp.text[:300]))

            try:
                run()
            except Exception as exc:  # noqa: BLE001 - a generation problem is not a 5xx
                if "Unsatisfiable" not in type(exc).__name__:
                    raise
    assert calls > 50
    assert not failures, failures
    assert not throttled, f"throttled, so the fuzzer did not reach the routes: {throttled[:5]}"
    assert hostile_stack.client().get("/healthz").status_code == 200
