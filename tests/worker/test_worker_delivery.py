"""Worker delivery semantics on a real celery worker with Redis and PostgreSQL.

- a pool process SIGKILLed mid-training: the message is redelivered (acks_late +
  reject_on_worker_lost), the job stuck in `running` is re-claimed (attempt 2) and succeeds
  exactly once, with one checkpoint;
- a duplicate delivery of a succeeded job does nothing;
- DELETE of a running job stops training (the callback's should_stop) and removes its data.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from celery import Celery

from service.jobs import TRAIN_TASK_NAME
from utils.factories import image_multipart, photos, read_adaptation
from utils.stack import wait_for_status

pytestmark = pytest.mark.slow

CLASSES = ["bag", "coat", "sandal", "trouser"]


def _submit(client, epochs: int) -> str:
    files, data = image_multipart(photos("train", 8, CLASSES))
    config = {"adapter": {"preset": "ivlp"}, "train": {"epochs": epochs, "augment": False,
                                                       "batch_size": 4}}
    resp = client.post("/adaptations", files=files, data={**data, "config": json.dumps(config)})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def _wait_step(client, job_id: str, step: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/adaptations/{job_id}").json()
        if body["status"] == "running" and (body["progress"] or {}).get("step", 0) >= step:
            return body
        assert body["status"] in ("queued", "running"), body
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} never reached step {step}")


def _checkpoint_dir(stack, job_id: str):
    found = list(stack.blob_root.glob(f"tenants/*/adaptations/{job_id}/checkpoint"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def killed_and_redelivered(pg_stack, tenant_factory):
    """Train a job, SIGKILL the pool process mid-training, wait for the redelivered run."""
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        job_id = _submit(c, epochs=12)
        _wait_step(c, job_id, 15)
        row = read_adaptation(pg_stack.database_url, job_id)
        assert row.attempt == 1
        pid = int(row.worker.rsplit(":", 1)[1])
        main_pid = pg_stack.procs["worker"].pid
        assert pid != main_pid
        os.kill(pid, signal.SIGKILL)
        body = wait_for_status(c, job_id, {"succeeded", "failed", "canceled"}, timeout=240)
    return key, job_id, body


def test_sigkilled_worker_job_is_redelivered_and_succeeds_once(pg_stack, killed_and_redelivered):
    _, job_id, body = killed_and_redelivered
    assert body["status"] == "succeeded", (body, pg_stack.log_tail("worker"))
    assert body["attempt"] == 2
    log = pg_stack.logs["worker"].read_text(errors="replace")
    assert "WorkerLostError" in log or "SIGKILL" in log
    assert log.count(f"job {job_id} attempt 2 succeeded") == 1
    assert f"job {job_id} attempt 1 succeeded" not in log
    ckpt = _checkpoint_dir(pg_stack, job_id)
    assert sorted(p.name for p in ckpt.iterdir()) == ["adapter", "adapter.zip"]
    assert sorted(p.name for p in (ckpt / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]


def test_duplicate_delivery_of_succeeded_job_is_a_noop(pg_stack, killed_and_redelivered):
    _, job_id, body = killed_and_redelivered
    ckpt = _checkpoint_dir(pg_stack, job_id)
    before = (ckpt / "adapter.zip").stat().st_mtime_ns
    producer = Celery("test-producer", broker=pg_stack.env["MMLOP_BROKER_URL"])
    producer.send_task(TRAIN_TASK_NAME, args=[job_id], queue=pg_stack.env["MMLOP_TASK_QUEUE"])
    marker = f"job {job_id} is already succeeded (attempts: 2); this delivery does nothing"
    deadline = time.monotonic() + 60
    while marker not in pg_stack.logs["worker"].read_text(errors="replace"):
        assert time.monotonic() < deadline, pg_stack.log_tail("worker")
        time.sleep(0.3)
    row = read_adaptation(pg_stack.database_url, job_id)
    assert row.status == "succeeded" and row.attempt == 2
    assert row.finished_at is not None
    assert (_checkpoint_dir(pg_stack, job_id) / "adapter.zip").stat().st_mtime_ns == before


def test_delete_cancels_running_job(pg_stack, tenant_factory):
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        job_id = _submit(c, epochs=200)
        _wait_step(c, job_id, 3)
        assert c.delete(f"/adaptations/{job_id}").status_code == 204
        assert c.get(f"/adaptations/{job_id}").status_code == 404
    marker = f"job {job_id} attempt 1 stopped: the job was canceled and deleted"
    deadline = time.monotonic() + 30
    while marker not in pg_stack.logs["worker"].read_text(errors="replace"):
        assert time.monotonic() < deadline, pg_stack.log_tail("worker")
        time.sleep(0.3)
    row = read_adaptation(pg_stack.database_url, job_id)
    assert row.status == "canceled" and row.deleted_at is not None
    deadline = time.monotonic() + 15
    while list(pg_stack.blob_root.glob(f"tenants/*/adaptations/{job_id}")):
        assert time.monotonic() < deadline, "job data not deleted"
        time.sleep(0.3)
