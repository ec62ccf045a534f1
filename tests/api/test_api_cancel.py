"""``POST /adaptations/{id}/cancel`` on the real stack: a running job is stopped by the real
worker and kept as ``canceled`` with its uploads freed; a queued job that no worker ever picks up
is canceled too; terminal jobs answer 409; repeating it is harmless; other tenants get 404."""

from __future__ import annotations

import json
import re
import time

import pytest

from service.jobs import JobStatus, job_prefix
from utils.factories import image_multipart, make_adaptation, photos, read_adaptation

pytestmark = pytest.mark.slow


def test_cancel_a_running_job_keeps_the_record_and_frees_the_uploads(pg_stack, tenant_factory):
    tenant, key = tenant_factory()
    files, data = image_multipart(photos("train", 8, ["bag", "coat", "sneaker"]))
    data["config"] = json.dumps({"train": {"epochs": 200, "shots": 8, "seed": 1}})
    with pg_stack.client(key) as c:
        job = c.post("/adaptations", files=files, data=data).json()
        folder = pg_stack.blob_root / job_prefix(tenant, job["id"])
        assert (folder / "uploads").is_dir()
        deadline = time.monotonic() + 120
        while not (body := c.get(f"/adaptations/{job['id']}").json())["progress"]:
            assert time.monotonic() < deadline and body["status"] in ("queued", "running"), body
            time.sleep(0.2)
        resp = c.post(f"/adaptations/{job['id']}/cancel")
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "canceled" and resp.json()["finished_at"]
        assert not folder.exists()  # no checkpoint can come and nothing resumes: space freed
        row = read_adaptation(pg_stack.database_url, job["id"])
        assert row.upload_bytes == 0 and row.cancel_requested  # and the quota
        # the worker stops at its next step and leaves the job canceled
        deadline = time.monotonic() + 60
        while not re.search(rf"job {job['id']} attempt \d+ stopped: the job was canceled$",
                            pg_stack.log_tail("worker", 50000), re.M):
            assert time.monotonic() < deadline, pg_stack.log_tail("worker")
            time.sleep(0.2)
        body = c.get(f"/adaptations/{job['id']}").json()
        assert body["status"] == "canceled" and body["checkpoint_bytes"] is None
        assert not folder.exists()
        listed = c.get("/adaptations", params={"status": "canceled"}).json()
        assert [i["id"] for i in listed["items"]] == [job["id"]]
        again = c.post(f"/adaptations/{job['id']}/cancel")  # idempotent
        assert again.status_code == 200 and again.json() == body
        assert c.get(f"/adaptations/{job['id']}/checkpoint").status_code == 409
        assert c.delete(f"/adaptations/{job['id']}").status_code == 204
        assert c.post(f"/adaptations/{job['id']}/cancel").status_code == 404


def test_cancel_a_queued_job_no_worker_picks_up(pg_stack, tenant_factory):
    tenant, key = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant, upload_bytes=1234)  # not enqueued
    with pg_stack.client(key) as c:
        resp = c.post(f"/adaptations/{job_id}/cancel")
        assert resp.status_code == 200 and resp.json()["status"] == "canceled", resp.text
        assert c.get(f"/adaptations/{job_id}").json()["status"] == "canceled"
    assert read_adaptation(pg_stack.database_url, job_id).upload_bytes == 0


@pytest.mark.parametrize("status", [JobStatus.succeeded, JobStatus.failed])
def test_cancel_of_a_finished_job_is_409(pg_stack, tenant_factory, status):
    tenant, key = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant, status)
    with pg_stack.client(key) as c:
        resp = c.post(f"/adaptations/{job_id}/cancel")
        assert resp.status_code == 409, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        problem = resp.json()
        assert problem["type"].endswith("/not-cancelable") and problem["reason"] == status.value
        assert c.get(f"/adaptations/{job_id}").json()["status"] == status.value


def test_cancel_of_another_tenants_job_is_404(pg_stack, tenant_factory):
    tenant_a, _ = tenant_factory()
    _, key_b = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant_a)
    with pg_stack.client(key_b) as c:
        resp = c.post(f"/adaptations/{job_id}/cancel")
        assert resp.status_code == 404 and resp.json()["type"].endswith("/not-found"), resp.text
    assert read_adaptation(pg_stack.database_url, job_id).status == "queued"
