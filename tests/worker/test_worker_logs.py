"""Log lines of the real API and worker processes (issue 12, D.16).

- API and worker lines have one format, with the request id (``X-Request-ID``, echoed) and the
  job id; before the fix they came in three formats (uvicorn's, Celery's, Celery's task format)
  and the API's INFO lines were not written at all;
- the first delivery of a job canceled before it ran is not called "duplicate delivery ignored";
- a canceled job's task is not logged by Celery as "succeeded ... 'canceled'".
"""

from __future__ import annotations

import json
import re
import time

import pytest
from celery import Celery

from service.jobs import TRAIN_TASK_NAME, JobStatus
from utils.factories import image_multipart, make_adaptation, photos, read_adaptation
from utils.stack import wait_for_status

pytestmark = pytest.mark.slow

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR|DEBUG) \[[^\]]+\] "
                  r"\S+ request_id=\S+ job_id=\S+: .*")
CLASSES = ["bag", "coat", "sandal", "trouser"]


def _submit(client, epochs: int, headers: dict | None = None):
    files, data = image_multipart(photos("train", 4, CLASSES))
    config = {"adapter": {"preset": "ivlp"}, "train": {"epochs": epochs, "batch_size": 4}}
    resp = client.post("/adaptations", files=files, data={**data, "config": json.dumps(config)},
                       headers=headers or {})
    assert resp.status_code == 202, resp.text
    return resp


def _lines(stack, name: str, needle: str) -> list[str]:
    return [ln for ln in stack.logs[name].read_text(errors="replace").splitlines() if needle in ln]


def _wait_line(stack, name: str, needle: str, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while not (found := _lines(stack, name, needle)):
        assert time.monotonic() < deadline, stack.log_tail(name)
        time.sleep(0.3)
    return found


def test_api_and_worker_lines_share_one_format_with_request_and_job_id(pg_stack, tenant_factory):
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        resp = _submit(c, epochs=1, headers={"X-Request-ID": "req-d16-0001"})
        assert resp.headers["X-Request-ID"] == "req-d16-0001"
        job_id = resp.json()["id"]
        assert wait_for_status(c, job_id, {"succeeded"})["attempt"] == 1
        forged = c.get("/healthz", headers={"X-Request-ID": "bad id; INFO forged=1"})
        assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["X-Request-ID"])
    api = _wait_line(pg_stack, "api", job_id)
    assert all(LINE.match(ln) for ln in api), api
    assert any("request_id=req-d16-0001" in ln for ln in api), api
    worker = _wait_line(pg_stack, "worker", f"job {job_id} attempt 1 succeeded")
    worker = _lines(pg_stack, "worker", job_id)
    assert all(LINE.match(ln) for ln in worker), worker
    assert all(f"job_id={job_id}:" in ln for ln in worker), worker


def test_first_delivery_of_a_job_canceled_before_it_ran_is_not_a_duplicate(pg_stack, tenant_factory):
    tenant_id, _ = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant_id, JobStatus.canceled)
    Celery("test-producer", broker=pg_stack.env["MMLOP_BROKER_URL"]).send_task(
        TRAIN_TASK_NAME, args=[job_id], queue=pg_stack.env["MMLOP_TASK_QUEUE"])
    (line,) = _wait_line(pg_stack, "worker", f"job {job_id} ")
    assert "duplicate" not in line
    assert f"job {job_id} was canceled before it ran; this delivery does nothing" in line


def test_a_canceled_jobs_task_is_not_logged_as_succeeded(pg_stack, tenant_factory):
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        job_id = _submit(c, epochs=200).json()["id"]
        deadline = time.monotonic() + 120
        while (c.get(f"/adaptations/{job_id}").json().get("progress") or {}).get("step", 0) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert c.delete(f"/adaptations/{job_id}").status_code == 204
    deadline = time.monotonic() + 60
    while read_adaptation(pg_stack.database_url, job_id).status != "canceled":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    stopped = _wait_line(pg_stack, "worker", f"job {job_id} attempt 1 stopped")
    assert "the job was canceled and deleted" in stopped[0]
    time.sleep(3)  # Celery's own line, if any, follows the task's return
    log = pg_stack.logs["worker"].read_text(errors="replace")
    assert not re.search(r"succeeded in [^\n]*'canceled'", log), log[-3000:]
