"""End to end with ``MMLOP_BLOB_URL=s3://...``: a real uvicorn and a real Celery worker, each in
its own working directory and temp dir, on PostgreSQL + Redis and an S3 wire-protocol server
(moto_server on 127.0.0.1, reached through a TCP proxy the test can cut). No shared filesystem.

adapt -> classify -> download -> delete; the store down during an upload (503, no row, no
object); the store down for the worker during training (it retries for blob_retry_s, then the
job fails saying so; back within that time, the job succeeds); an object vanished under a
succeeded adapter (409 naming it); objects without a job row (what a store that dies
mid-upload leaves, when the cleanup cannot reach it either) are swept by the reconciler;
concurrent classify and downloads on more adapters than the read cache holds all answer 200.
"""

from __future__ import annotations

import io
import zipfile

import pytest

from service.jobs import JobStatus
from utils.factories import image_multipart, make_adaptation, make_tenant, photos
from utils.s3 import classify, s3_delete, s3_etag, s3_objects, s3_service, submit_small
from utils.stack import wait_for_status

pytestmark = pytest.mark.slow
PREFIX = "mmlop"
RETRY_S = 4  # the worker's MMLOP_BLOB_RETRY_S here


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory, s3_endpoint, redis_broker_url):
    """API and worker (separate cwd and TMPDIR) sharing only PostgreSQL, Redis and S3 URLs."""
    with s3_service(tmp_path_factory.mktemp("s3_stack"), s3_endpoint, redis_broker_url,
                    extra_env={"MMLOP_BLOB_RETRY_S": str(RETRY_S),
                               # the worker's reconciler sweeps orphaned objects 2 s old
                               "MMLOP_RECONCILE_INTERVAL_S": "1",
                               "MMLOP_RECONCILE_GRACE_S": "2",
                               # one cached checkpoint, one loaded adapter: every classify on
                               # another adapter evicts (test_cache_eviction_never_breaks...)
                               "MMLOP_BLOB_CACHE_ENTRIES": "1",
                               "MMLOP_ADAPTER_CACHE_SIZE": "1"}) as s:
        yield s


def _job_objects(s, tenant_id: str, job_id: str = "") -> list[str]:
    return s3_objects(s.endpoint, s.bucket, f"{PREFIX}/tenants/{tenant_id}/adaptations/{job_id}")


def test_adapt_classify_download_delete_on_s3(s3_stack):
    s = s3_stack
    tenant_id, key = make_tenant(s.database_url)
    with s.api.client(key) as c:
        job = submit_small(c)
        body = wait_for_status(c, job, {"succeeded", "failed", "canceled"})
        assert body["status"] == "succeeded", (body, s.worker.log_tail("worker"))
        objects = _job_objects(s, tenant_id, job)
        assert f"{PREFIX}/tenants/{tenant_id}/adaptations/{job}/checkpoint/adapter.zip" in objects
        assert sum("/uploads/" in k for k in objects) == 4
        resp = classify(c, job)
        assert resp.status_code == 200, resp.text
        assert resp.json()["results"][0]["predictions"][0]["label"] in ("bag", "coat")
        resp = c.get(f"/adaptations/{job}/checkpoint")
        assert resp.status_code == 200
        names = zipfile.ZipFile(io.BytesIO(resp.content)).namelist()
        assert "adapter_config.json" in names and "adapter_model.safetensors" in names
        assert c.delete(f"/adaptations/{job}").status_code == 204
        assert _job_objects(s, tenant_id, job) == []
        assert classify(c, job).status_code == 404
        assert c.get(f"/adaptations/{job}/checkpoint").status_code == 404
    # Nothing went through a local blob folder of either process.
    for role in (s.api, s.worker):
        assert not (role.cwd / "var" / "blobs" / "tenants").exists()
    assert list((s.api.cwd / "var" / "blob-cache").iterdir())  # the API's read cache was used


def test_vanished_objects_answer_409_naming_them(s3_stack):
    s = s3_stack
    tenant_id, key = make_tenant(s.database_url)
    with s.api.client(key) as c:
        job = submit_small(c)
        assert wait_for_status(c, job, {"succeeded", "failed"})["status"] == "succeeded"
        base = f"{PREFIX}/tenants/{tenant_id}/adaptations/{job}/checkpoint"
        s3_delete(s.endpoint, s.bucket, f"{base}/adapter/adapter_model.safetensors")
        s3_delete(s.endpoint, s.bucket, f"{base}/adapter.zip")
        for resp, name in ((classify(c, job), "adapter/adapter_model.safetensors"),
                           (c.get(f"/adaptations/{job}/checkpoint"), "adapter.zip")):
            assert resp.status_code == 409, resp.text
            assert resp.headers["content-type"].startswith("application/problem+json")
            problem = resp.json()
            assert problem["reason"] == "missing" and problem["field"] == name
            assert f"checkpoint object {name} of adaptation {job} is missing" in problem["detail"]
            assert s.bucket not in problem["detail"]


def test_store_down_during_upload_is_503_without_row_or_object(s3_stack):
    s = s3_stack
    tenant_id, key = make_tenant(s.database_url)
    with s.api.client(key) as c:
        s.proxy.down()
        try:
            files, data = image_multipart(photos("train", 2, ["bag", "coat"]))
            resp = c.post("/adaptations", files=files, data=data)
        finally:
            s.proxy.up()
        assert resp.status_code == 503, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["type"].endswith("/blob-store-unavailable")
        assert resp.headers["retry-after"]
        assert c.get("/adaptations").json()["items"] == []
        assert _job_objects(s, tenant_id) == []
        # The store is back: the next upload goes through.
        job = submit_small(c)
        assert wait_for_status(c, job, {"succeeded", "failed"})["status"] == "succeeded"


def test_a_big_upload_goes_to_s3_in_parts(s3_stack):
    """Issue 10: uploads stream to the store; an image over 8 MiB is a multipart upload."""
    import os

    from PIL import Image

    s = s3_stack
    tenant_id, key = make_tenant(s.database_url)
    big = io.BytesIO()
    Image.frombytes("RGB", (2048, 1536), os.urandom(2048 * 1536 * 3)).save(big, "PNG", compress_level=1)
    assert big.tell() > 9 * 1024 * 1024
    (_, small), = photos("train", 1, ["coat"])
    with s.api.client(key) as c:
        resp = c.post("/adaptations", files=[("images", ("big.png", big.getvalue(), "image/png")),
                                             ("images", ("small.png", small.read_bytes(), "image/png"))],
                      data={"labels": ["bag", "coat"]})
        assert resp.status_code == 202, resp.text
        job = resp.json()["id"]
        uploads = sorted(k for k in _job_objects(s, tenant_id, job) if "/uploads/" in k)
        etags = [s3_etag(s.endpoint, s.bucket, k) for k in uploads]
        assert etags[0].endswith("-2") and "-" not in etags[1], etags
        assert c.delete(f"/adaptations/{job}").status_code == 204


def test_store_down_during_training_retries_then_fails_clearly(s3_stack):
    s = s3_stack
    _, key = make_tenant(s.database_url)
    with s.api.client(key) as c:
        s.worker_proxy.down()  # the API still stores the upload; the worker cannot read it
        try:
            job = submit_small(c)
            body = wait_for_status(c, job, {"succeeded", "failed"}, timeout=120)
        finally:
            s.worker_proxy.up()
        assert body["status"] == "failed", body
        assert body["error"].startswith("blob store error: object store unreachable"), body
        assert f"over {RETRY_S}" in body["error"] and "tries" in body["error"], body
        log = s.worker.log_tail("worker", chars=200_000)
        assert f"job {job}" in log and "blob store unavailable" in log


def test_store_back_during_the_retries_lets_the_job_succeed(s3_stack):
    import threading

    s = s3_stack
    _, key = make_tenant(s.database_url)
    with s.api.client(key) as c:
        s.worker_proxy.down()
        restore = threading.Timer(RETRY_S / 2, s.worker_proxy.up)
        restore.start()
        try:
            job = submit_small(c)
            body = wait_for_status(c, job, {"succeeded", "failed"}, timeout=120)
        finally:
            restore.join()
        assert body["status"] == "succeeded", body
        assert body["attempt"] == 1


def test_reconciler_sweeps_orphaned_objects_from_s3(s3_stack):
    import time

    import boto3

    s = s3_stack
    tenant_id, key = make_tenant(s.database_url)
    with s.api.client(key) as c:
        live = submit_small(c)
        assert wait_for_status(c, live, {"succeeded", "failed"})["status"] == "succeeded"
    orphan = f"{PREFIX}/tenants/{tenant_id}/adaptations/0b1e7c1e-dead-4bad-8bad-000000000000"
    boto3.client("s3", endpoint_url=s.endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").put_object(
        Bucket=s.bucket, Key=f"{orphan}/uploads/000000.png", Body=b"half")
    deadline = time.monotonic() + 30
    while s3_objects(s.endpoint, s.bucket, orphan) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert s3_objects(s.endpoint, s.bucket, orphan) == []
    assert _job_objects(s, tenant_id, live), "the live job's objects must stay"
    assert "removing tenants/" in s.worker.log_tail("worker", chars=1_000_000)


def test_cache_eviction_never_breaks_concurrent_reads(s3_stack):
    """Fresh-user item 2: with one cache entry and one loaded adapter, 28 concurrent classify
    calls and 7 downloads on 7 adapters all answer 200 (an entry was evicted between its
    download and its load: 409 checkpoint-unusable for healthy adapters)."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    s = s3_stack
    tenant_id, key = make_tenant(s.database_url)
    with s.api.client(key) as c:
        trained = submit_small(c)
        body = wait_for_status(c, trained, {"succeeded", "failed"})
        assert body["status"] == "succeeded", body
        client = boto3.client("s3", endpoint_url=s.endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        source = f"{PREFIX}/tenants/{tenant_id}/adaptations/{trained}/checkpoint"
        names = [k[len(source):] for k in s3_objects(s.endpoint, s.bucket, source)]
        jobs = [trained]
        for _ in range(6):  # six more succeeded adapters holding copies of the checkpoint
            job = make_adaptation(s.database_url, tenant_id, JobStatus.succeeded,
                                  class_names=body["class_names"], attempt=body["attempt"],
                                  backbone=body["backbone"], pretrained=body["pretrained"])
            target = f"{PREFIX}/tenants/{tenant_id}/adaptations/{job}/checkpoint"
            for name in names:
                client.copy_object(Bucket=s.bucket, Key=target + name,
                                   CopySource={"Bucket": s.bucket, "Key": source + name})
            jobs.append(job)
        calls = [(classify, j) for j in jobs * 4] + \
            [(lambda c_, j_: c_.get(f"/adaptations/{j_}/checkpoint"), j) for j in jobs]
        with ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(lambda call: call[0](c, call[1]), calls))
        bad = [(r.status_code, r.text[:200]) for r in answers if r.status_code != 200]
        assert not bad, (len(bad), bad[:3])
        assert all(zipfile.ZipFile(io.BytesIO(r.content)).namelist() for r in answers[-7:])


def test_uploads_in_progress_and_foreign_ones_survive_the_reconciler(s3_stack):
    """moto dates every multipart upload 2010: the worker's reconciler (a pass every second,
    grace 2 s) must still leave an upload in progress under the prefix, and another
    application's upload in the same bucket, alone."""
    import time

    import boto3

    s = s3_stack
    raw = boto3.client("s3", endpoint_url=s.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ours = raw.create_multipart_upload(
        Bucket=s.bucket, Key=f"{PREFIX}/tenants/t/adaptations/a/uploads/000014.png")["UploadId"]
    theirs = raw.create_multipart_upload(Bucket=s.bucket, Key="other-app/backup.tar")["UploadId"]
    time.sleep(5)  # several reconciler passes
    open_ids = {u["UploadId"] for u in raw.list_multipart_uploads(Bucket=s.bucket).get(
        "Uploads", [])}
    assert {ours, theirs} <= open_ids
    assert "multipart:" not in s.worker.log_tail("worker", chars=1_000_000)
    for key, upload in ((f"{PREFIX}/tenants/t/adaptations/a/uploads/000014.png", ours),
                        ("other-app/backup.tar", theirs)):
        raw.abort_multipart_upload(Bucket=s.bucket, Key=key, UploadId=upload)


def test_readyz_checks_the_blob_store(s3_stack):
    """/readyz is 503 naming the blob store while S3 is unreachable, 200 again once it is back
    (the probe's answer is kept 5 s)."""
    import time

    import httpx

    s = s3_stack
    url = s.api.base_url + "/readyz"
    assert httpx.get(url, timeout=30).json()["checks"]["blob_store"] == "ok"
    s.proxy.down()
    try:
        deadline, resp = time.monotonic() + 20, None
        while time.monotonic() < deadline:
            resp = httpx.get(url, timeout=30)
            if resp.status_code == 503:
                break
            time.sleep(1)
        assert resp.status_code == 503, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["checks"]["blob_store"] != "ok"
        assert "blob_store" in resp.json()["detail"]
    finally:
        s.proxy.up()
    deadline = time.monotonic() + 20
    while httpx.get(url, timeout=30).status_code != 200 and time.monotonic() < deadline:
        time.sleep(1)
    assert httpx.get(url, timeout=30).status_code == 200
