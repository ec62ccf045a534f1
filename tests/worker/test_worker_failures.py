"""Worker failure paths on the real worker: unreadable training data fails the job with a
message; a job claimed `job_max_attempts` times (a poison message) is failed, not retrained."""

from __future__ import annotations

import time

from celery import Celery

from service.jobs import TRAIN_TASK_NAME, JobStatus
from utils.factories import make_adaptation, read_adaptation


def _send(stack, job_id: str) -> None:
    producer = Celery("test-producer", broker=stack.env["MMLOP_BROKER_URL"])
    producer.send_task(TRAIN_TASK_NAME, args=[job_id], queue=stack.env["MMLOP_TASK_QUEUE"])


def _wait_terminal(stack, job_id: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = read_adaptation(stack.database_url, job_id)
        if row.status in ("succeeded", "failed", "canceled"):
            return row
        time.sleep(0.3)
    raise TimeoutError(stack.log_tail("worker"))


def test_missing_upload_fails_job_with_message(pg_stack, tenant_factory):
    tenant_id, key = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant_id,
                             images=[[f"tenants/{tenant_id}/gone/000000.png", 0]], num_images=1)
    _send(pg_stack, job_id)
    row = _wait_terminal(pg_stack, job_id)
    assert row.status == "failed" and row.attempt == 1
    assert "000000.png" in row.error
    with pg_stack.client(key) as c:
        body = c.get(f"/adaptations/{job_id}").json()
        assert body["status"] == "failed" and body["error"]


def test_poison_message_gives_up_after_max_attempts(pg_stack, tenant_factory):
    tenant_id, _ = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant_id, JobStatus.running, attempt=3,
                             worker="elsewhere:1")
    _send(pg_stack, job_id)
    row = _wait_terminal(pg_stack, job_id)
    assert row.status == "failed" and row.attempt == 3
    assert "gave up after 3 attempts" in row.error


def test_internal_error_text_never_reaches_the_user(pg_stack, tenant_factory):
    """A crash the library does not anticipate (here a corrupt manifest row) fails the job with
    a fixed message; the exception class and text go to the worker's log only (issue 12, C.6)."""
    tenant_id, key = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant_id, images=[["not-a-key-label-pair"]], num_images=1)
    _send(pg_stack, job_id)
    row = _wait_terminal(pg_stack, job_id)
    assert row.status == "failed"
    assert "ValueError" not in row.error and "unpack" not in row.error, row.error
    assert "internal error" in row.error and job_id in row.error
    with pg_stack.client(key) as c:
        assert c.get(f"/adaptations/{job_id}").json()["error"] == row.error


def test_template_with_a_named_field_fails_with_the_config_message(pg_stack, tenant_factory):
    """A row written before templates were checked at submission: the worker names the template,
    not ``KeyError: 'foo'``."""
    tenant_id, _ = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant_id, adapter_config={"template": "a photo of a {} {foo}"})
    _send(pg_stack, job_id)
    row = _wait_terminal(pg_stack, job_id)
    assert row.status == "failed" and "template=" in row.error and "KeyError" not in row.error, row.error
