"""Embedded mode (filesystem broker, no redelivery): a worker SIGKILLed as a whole mid-training
leaves its job `running`; the restarted worker finds the dead owner and re-enqueues it."""

from __future__ import annotations

import json
import time

import pytest

from utils.factories import image_multipart, make_tenant, photos, read_adaptation
from utils.stack import wait_for_status

pytestmark = pytest.mark.slow


def test_whole_worker_killed_job_recovers_on_restart(embedded_stack):
    stack = embedded_stack
    _, key = make_tenant(stack.database_url)
    files, data = image_multipart(photos("train", 4, ["bag", "coat", "sandal"]))
    config = {"adapter": {"preset": "ivlp"}, "train": {"epochs": 20, "batch_size": 4}}
    with stack.client(key) as c:
        resp = c.post("/adaptations", files=files, data={**data, "config": json.dumps(config)})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        deadline = time.monotonic() + 120
        while True:
            body = c.get(f"/adaptations/{job_id}").json()
            if body["status"] == "running" and (body["progress"] or {}).get("step", 0) >= 3:
                break
            assert body["status"] in ("queued", "running") and time.monotonic() < deadline, body
            time.sleep(0.2)
        stack.kill_worker()
        time.sleep(1)
        assert c.get(f"/adaptations/{job_id}").json()["status"] == "running"
        stack.start_worker()
        body = wait_for_status(c, job_id, {"succeeded", "failed", "canceled"}, timeout=240)
    assert body["status"] == "succeeded", (body, stack.log_tail("worker"))
    assert body["attempt"] == 2
    assert read_adaptation(stack.database_url, job_id).checkpoint_bytes > 0
    log = stack.logs["worker"].read_text(errors="replace")
    assert f"job {job_id} was left running by dead process" in log
    assert log.count(f"job {job_id} attempt 2 succeeded") == 1
