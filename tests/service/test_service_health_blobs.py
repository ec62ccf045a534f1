"""/readyz's blob store check (service/health.py ``blob_store_status``): a missing bucket or an
unwritable folder is "not ready" naming the store; answers are kept 5 s; a hung probe is
bounded. The API-level check with S3 cut is in tests/api/test_api_s3_e2e.py."""

from __future__ import annotations

import threading

import pytest

from service import health


@pytest.fixture
def probed(monkeypatch):
    """Point ``get_blob_store`` at a chosen store and clear the probe's cached answer."""
    import service.blobs

    monkeypatch.setitem(health._blob_probe, "at", -1e18)

    def use(store):
        monkeypatch.setattr(service.blobs, "get_blob_store", lambda: store)
        monkeypatch.setitem(health._blob_probe, "at", -1e18)
    return use


def test_missing_bucket_is_not_ready(probed, s3_env, tmp_path):
    from service.blobs_s3 import S3BlobStore
    from utils.s3 import create_bucket

    probed(S3BlobStore("s3://nosuchbucket10/x", tmp_path / "c"))
    ok, detail = health.blob_store_status()
    assert not ok and "bucket missing or credentials" in detail and "MMLOP_BLOB_URL" in detail
    probed(S3BlobStore(f"s3://{create_bucket(s3_env)}/x", tmp_path / "c"))
    assert health.blob_store_status() == (True, "ok")


def test_filesystem_store_folder_gone_is_not_ready_and_answers_are_cached(probed, tmp_path):
    import shutil

    from service.blobs import BlobStore

    store = BlobStore(tmp_path / "blobs")
    probed(store)
    assert health.blob_store_status() == (True, "ok")
    shutil.rmtree(tmp_path / "blobs")
    assert health.blob_store_status() == (True, "ok")  # cached for 5 s
    health._blob_probe["at"] = -1e18
    ok, detail = health.blob_store_status()
    assert not ok and "not writable" in detail


def test_a_hung_probe_is_bounded(probed, monkeypatch):
    release = threading.Event()

    class Hung:
        def probe(self):
            release.wait(30)

    monkeypatch.setattr(health, "_BLOB_PROBE_TIMEOUT_S", 0.2)
    probed(Hung())
    try:
        ok, detail = health.blob_store_status()
        assert not ok and "no answer within 0.2 s" in detail
    finally:
        release.set()


def test_a_vanished_bucket_is_503_not_the_409_of_a_missing_object(s3_env, tmp_path):
    """checkpoints.adapter_dir on a missing bucket raises the store error (503
    blob-store-unavailable naming the configuration), not ProblemError 409 reason missing."""
    from api.checkpoints import adapter_dir
    from service.blobs import BlobStoreConfigError
    from service.blobs_s3 import S3BlobStore

    with pytest.raises(BlobStoreConfigError):
        adapter_dir(S3BlobStore("s3://nosuchbucket10/x", tmp_path / "c"), "t", "j", 1)


@pytest.mark.parametrize("config", [True, False])
def test_store_errors_answer_503_blob_store_unavailable(config):
    """The problem handler: a refused bucket names the configuration, an outage says retry."""
    import errno

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from api import problem
    from service.blobs import BlobStoreConfigError, BlobStoreError

    app = FastAPI()
    problem.install(app)

    @app.get("/x")
    def fail():
        raise (BlobStoreConfigError if config else BlobStoreError)(errno.EIO, "bucket b: NoSuchBucket")

    resp = TestClient(app, raise_server_exceptions=False).get("/x")
    assert resp.status_code == 503 and resp.json()["kind"] == "blob-store-unavailable"
    assert ("MMLOP_BLOB_URL" in resp.json()["detail"]) is config
    assert "bucket b" not in resp.json()["detail"]
