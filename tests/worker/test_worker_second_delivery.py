"""A second delivery of a job whose owner is alive and heartbeating leaves the job untouched
(issue 12, B.5), on a real celery worker (two pool processes, so a second delivery is taken while
the first runs) with Redis and PostgreSQL, and the worker's reconciler on.

Each way a second delivery can arrive:
- a duplicate publish of the task (a client retry, an operator re-send);
- the broker's redelivery after the visibility timeout: the message is restored exactly as kombu
  does once the timeout has passed (``restore_by_tag`` of the unacked entry), without waiting it;
- the reconciler's requeue of a running job whose heartbeat looks old: a job whose text-feature
  phase (before the first training step) lasts longer than the heartbeat timeout must keep
  heartbeating through it.

Before the fix each of them claimed attempt 2 and superseded the healthy attempt 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from service.jobs import TRAIN_TASK_NAME
from utils.factories import image_multipart, make_tenant, photos, read_adaptation
from utils.stack import Stack, own_pg_stack, wait_for_status

pytestmark = pytest.mark.slow

HEARTBEAT_TIMEOUT_S = 4
CLASSES = ["bag", "coat", "sandal", "trouser"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_broker_url: str) -> Iterator[Stack]:
    """API + a two-process worker on a database and queue of their own, reconciler every second."""
    with own_pg_stack(tmp_path_factory.mktemp("second_delivery"), redis_broker_url,
                      {"MMLOP_RECONCILE_INTERVAL_S": "1", "MMLOP_JOB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S)},
                      worker_concurrency=2) as s:
        yield s


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    """An API key of a tenant in the stack's database."""
    return make_tenant(stack.database_url)[1]


def _submit(client, items: list[tuple[str, Path]], train: dict) -> str:
    files, data = image_multipart(items)
    config = {"adapter": {"preset": "ivlp"}, "train": {"augment": False, **train}}
    resp = client.post("/adaptations", files=files, data={**data, "config": json.dumps(config)})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def _wait_running_step(client, job_id: str, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/adaptations/{job_id}").json()
        if body["status"] == "running" and (body["progress"] or {}).get("step", 0) >= step:
            return
        assert body["status"] in ("queued", "running"), body
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} never reached step {step}")


def _second_delivery_handled(stack: Stack, job_id: str, timeout: float = 60) -> None:
    """Wait until the worker logged the second delivery, or the job's attempt moved on."""
    marker = f"job {job_id}: second delivery while attempt 1 is alive"
    deadline = time.monotonic() + timeout
    while marker not in stack.logs["worker"].read_text(errors="replace"):
        row = read_adaptation(stack.database_url, job_id)
        assert row.attempt == 1, (f"a second delivery re-claimed a healthy job: attempt "
                                  f"{row.attempt}\n" + stack.log_tail("worker"))
        assert time.monotonic() < deadline, stack.log_tail("worker")
        time.sleep(0.2)


def _ends_in_attempt_1(stack: Stack, client, job_id: str) -> None:
    body = wait_for_status(client, job_id, {"succeeded", "failed", "canceled"}, timeout=300)
    log = stack.logs["worker"].read_text(errors="replace")
    assert body["status"] == "succeeded" and body["attempt"] == 1, (body, log[-4000:])
    assert log.count(f"job {job_id} attempt 1 succeeded") == 1
    assert f"job {job_id} attempt 2" not in log


def _unacked_tag(broker_url: str, job_id: str, timeout: float = 30) -> bytes:
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tag, raw in client.hgetall("unacked").items():
            if job_id.encode() in raw:
                return tag
        time.sleep(0.2)
    raise TimeoutError(f"no unacked message for job {job_id}")


def test_duplicate_publish_leaves_running_job_untouched(stack, key):
    with stack.client(key) as c:
        job_id = _submit(c, photos("train", 8, CLASSES), {"epochs": 10, "batch_size": 4})
        _wait_running_step(c, job_id, 3)
        producer = Celery("test-producer", broker=stack.env["MMLOP_BROKER_URL"])
        producer.send_task(TRAIN_TASK_NAME, args=[job_id], queue=stack.env["MMLOP_TASK_QUEUE"])
        _second_delivery_handled(stack, job_id)
        _ends_in_attempt_1(stack, c, job_id)


def test_broker_redelivery_after_visibility_timeout_leaves_running_job_untouched(stack, key):
    from kombu import Connection

    broker = stack.env["MMLOP_BROKER_URL"]
    with stack.client(key) as c:
        job_id = _submit(c, photos("train", 8, CLASSES), {"epochs": 10, "batch_size": 4})
        _wait_running_step(c, job_id, 3)
        tag = _unacked_tag(broker, job_id)
        with Connection(broker) as conn:  # what QoS.restore_visible does to an expired message
            conn.default_channel.qos.restore_by_tag(tag)
        _second_delivery_handled(stack, job_id)
        _ends_in_attempt_1(stack, c, job_id)


def test_reconciler_never_requeues_a_job_heartbeating_through_its_text_features(stack, key):
    # 100 classes x 61 templates: the frozen text features (before the first step) take well
    # over HEARTBEAT_TIMEOUT_S on the tiny backbone with one thread.
    one_photo = photos("train", 1, ["bag"])[0][1]
    items = [(f"class {i:03d}", one_photo) for i in range(100)]
    with stack.client(key) as c:
        job_id = _submit(c, items, {"epochs": 1, "batch_size": 100})
        body = wait_for_status(c, job_id, {"succeeded", "failed", "canceled"}, timeout=300)
        log = stack.logs["worker"].read_text(errors="replace")
        assert f"reconciler: job {job_id} had no heartbeat" not in log, log[-4000:]
        assert body["status"] == "succeeded" and body["attempt"] == 1, (body, log[-4000:])
