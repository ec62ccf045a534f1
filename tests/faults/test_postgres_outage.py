"""PostgreSQL unavailable: the API answers 503 problem+json, /readyz fails, nothing is written
half-way, and both recover by themselves when the database returns."""

from __future__ import annotations

import time

import pytest

from utils.factories import make_tenant
from utils.hostile import assert_problem

from .conftest import TcpProxy, make_stack, submit_small

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise TimeoutError("condition not reached")


def test_database_outage_is_503_and_recovers(tmp_path, own_database, redis_broker_url):
    proxy = TcpProxy(5432)
    proxy.start()
    via_proxy = own_database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    stack = make_stack(tmp_path, via_proxy, redis_broker_url,
                       {"MMLOP_RECONCILE_INTERVAL_S": "0"})
    try:
        stack.migrate()
        stack.start_api()
        stack.wait_ready()
        tenant_id, key = make_tenant(own_database)
        with stack.client(key, timeout=30) as c:
            assert c.get("/adaptations").status_code == 200
            proxy.cut()
            body = assert_problem(c.get("/adaptations"), 503)
            assert body["type"].endswith("database-unavailable")
            assert "retry-after" in {k.lower() for k in c.get("/adaptations").headers}
            resp = c.post("/adaptations", files=[("images", ("a.png", b"x", "image/png"))],
                          data={"labels": ["a"]})
            assert_problem(resp, 503)
            ready = c.get("/readyz")
            assert ready.status_code == 503 and "database" in ready.json()["detail"]
            assert c.get("/healthz").status_code == 200  # alive, not ready
            assert not (stack.blob_root / "tenants" / tenant_id).exists()
            proxy.start()
            _wait(lambda: c.get("/readyz").status_code == 200)
            assert c.get("/adaptations").json()["total"] == 0  # nothing half-written
            job_id = submit_small(c)
            assert [j["id"] for j in c.get("/adaptations").json()["items"]] == [job_id]
        assert "Traceback" not in stack.log_tail("api", chars=1_000_000)
    finally:
        stack.stop()
        proxy.close()
