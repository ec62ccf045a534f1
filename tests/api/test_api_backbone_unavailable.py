"""Regression: with unloadable backbone weights the API accepted adaptations (202) that could only
fail a minute later in the worker. It now answers 503 up front and stores nothing, and neither the
503 nor /readyz echoes the raw backbone exception (issue 12 D.10)."""

from __future__ import annotations

import time

import pytest

from utils.factories import image_multipart, make_tenant, photos
from utils.stack import Stack, base_env


@pytest.fixture(scope="module")
def broken_api(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("broken_backbone")
    env = base_env({"MMLOP_PRETRAINED": str(cwd / "missing-weights.pt")})
    stack = Stack(env=env, cwd=cwd, database_url=f"sqlite:///{cwd}/var/mmlop.db", blob_root=cwd / "var" / "blobs")
    try:
        stack.migrate()
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def test_adaptation_refused_with_503_when_backbone_cannot_load(broken_api):
    _, key = make_tenant(broken_api.database_url)
    with broken_api.client(key) as c:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "failed" not in c.get("/readyz").text:
            time.sleep(0.3)
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["backbone"].startswith("failed")
        files, data = image_multipart(photos("train", per_class=2, classes=["bag", "coat"]))
        resp = c.post("/adaptations", files=files, data=data)
        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert body["type"].endswith("backbone-unavailable") and "MMLOP_PRETRAINED" in body["detail"]
        # Issue 12 D.10: answers name what fixes it, never the raw exception or a server path;
        # the cause is in the API's log.
        for answer in (ready, resp):
            assert "missing-weights.pt" not in answer.text and str(broken_api.cwd) not in answer.text
            assert "Error:" not in answer.text, answer.text
        assert "missing-weights.pt" in broken_api.log_tail("api", chars=1_000_000)
        assert c.get("/adaptations").json()["items"] == []
    stored = [p for p in broken_api.blob_root.rglob("*") if p.is_file()] if broken_api.blob_root.exists() else []
    assert stored == []
