"""Redis restarted (without persistence) while jobs are queued: the database is the source of
truth, the worker's reconciler re-sends the lost messages, and every job succeeds exactly once."""

from __future__ import annotations

import pytest

from utils.factories import make_tenant
from utils.stack import wait_for_status

from .conftest import make_stack, submit_small

pytestmark = pytest.mark.slow


def test_queued_jobs_survive_a_redis_restart(tmp_path, own_database, redis_server):
    stack = make_stack(tmp_path, own_database, redis_server.url)
    try:
        stack.migrate()
        stack.start_api()
        stack.wait_ready()
        _, key = make_tenant(own_database)
        with stack.client(key) as c:
            jobs = [submit_small(c) for _ in range(3)]  # no worker yet: they wait in Redis
            queue = stack.env["MMLOP_TASK_QUEUE"]
            assert redis_server.llen(queue) == 3
            redis_server.stop()
            redis_server.start()  # empty: the three messages are gone
            assert redis_server.llen(queue) == 0
            stack.wait_ready(timeout=30)  # the API reconnects to the new Redis by itself
            jobs.append(submit_small(c))
            stack.start_worker()
            results = [wait_for_status(c, j, {"succeeded", "failed", "canceled"}, timeout=240)
                       for j in jobs]
        log = stack.logs["worker"].read_text(errors="replace")
        assert [r["status"] for r in results] == ["succeeded"] * 4, (results, log[-3000:])
        assert [r["attempt"] for r in results] == [1] * 4  # nothing ran twice
        assert "is queued but not in the broker; re-enqueuing" in log
        for job_id in jobs:
            assert log.count(f"job {job_id} attempt 1 succeeded") == 1
    finally:
        stack.stop()
