"""Redis restarted (without persistence) while jobs are queued: the database is the source of
truth, the worker's reconciler re-sends the lost messages, and every job succeeds exactly once.
The same reconciler recovers jobs whose worker died elsewhere (stale heartbeat)."""

from __future__ import annotations

import pytest

from datetime import datetime, timedelta, timezone

from service.jobs import JobStatus
from utils.factories import make_adaptation, make_tenant, read_adaptation
from utils.stack import wait_for_status

from .conftest import make_stack, submit_small

pytestmark = pytest.mark.slow


def test_queued_jobs_survive_a_redis_restart(tmp_path, own_database, redis_server):
    stack = make_stack(tmp_path, own_database, redis_server.url,
                       {"MMLOP_JOB_HEARTBEAT_TIMEOUT_S": "60"})
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
        # Redis restarted again under the running worker: it reconnects by itself.
        redis_server.stop()
        redis_server.start()
        stack.wait_ready(timeout=30)
        with stack.client(key) as c:
            late = submit_small(c)
            body = wait_for_status(c, late, {"succeeded", "failed", "canceled"}, timeout=180)
            assert body["status"] == "succeeded" and body["attempt"] == 1, body
        # Jobs left running by a worker that died on another host (stale heartbeat): re-sent
        # and run again, or failed as "worker lost" once out of attempts.
        stale = datetime.now(timezone.utc) - timedelta(hours=1)
        row = read_adaptation(own_database, jobs[0])
        again = make_adaptation(own_database, row.tenant_id, JobStatus.running, attempt=1,
                                worker="gone-host:1", heartbeat_at=stale, images=row.images,
                                num_images=row.num_images, class_names=row.class_names,
                                train_config=row.train_config, adapter_config=row.adapter_config)
        dead = make_adaptation(own_database, row.tenant_id, JobStatus.running, attempt=3,
                               worker="gone-host:2", heartbeat_at=stale)
        with stack.client(key) as c:
            body = wait_for_status(c, again, {"succeeded", "failed"}, timeout=120)
            assert body["status"] == "succeeded" and body["attempt"] == 2, body
            body = wait_for_status(c, dead, {"succeeded", "failed"}, timeout=60)
            assert body["status"] == "failed" and "worker lost" in body["error"], body
    finally:
        stack.stop()
