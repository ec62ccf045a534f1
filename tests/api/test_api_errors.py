"""API error handling on the real stack: auth (401), scoping (404), problem+json bodies,
validation (422 naming the field), upload and archive limits, not-ready adapters (409)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from service.jobs import JobStatus
from utils.factories import class_zip, image_multipart, make_adaptation, make_zip, photos

PROBLEM = "application/problem+json"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    return buf.getvalue()


def assert_problem(resp, status: int, field: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status and body["title"] and body["detail"] and "type" in body
    if field is not None:
        assert field in (body.get("field") or ""), body
    return body


def test_health_ready_metrics(pg_stack):
    with pg_stack.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["backbone"] == "ok"
        text = c.get("/metrics").text
        for name in ("mmlop_http_requests_total", "mmlop_http_request_duration_seconds",
                     "mmlop_queue_depth", "mmlop_adapters_cached"):
            assert name in text
        assert c.get("/docs").status_code == 200
        assert "/adaptations" in c.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("method,path", [
    ("GET", "/adaptations"), ("POST", "/adaptations"), ("GET", "/adaptations/x"),
    ("DELETE", "/adaptations/x"), ("GET", "/adaptations/x/checkpoint"), ("POST", "/classify/x"),
])
def test_missing_or_bad_key_is_401(pg_stack, method, path):
    with pg_stack.client() as c:
        assert_problem(c.request(method, path), 401)
    with pg_stack.client("mmlop_not-a-real-key") as c:
        assert_problem(c.request(method, path), 401)
    with pg_stack.client() as c:
        resp = c.request(method, path, headers={"Authorization": "Basic abc"})
        assert_problem(resp, 401)
        assert resp.headers["www-authenticate"].startswith("Bearer")


def test_unknown_route_and_id(pg_stack, tenant_factory):
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        assert_problem(c.get("/adaptations/does-not-exist"), 404)
        assert_problem(c.get("/nope"), 404)
        assert_problem(c.put("/adaptations"), 405)


def test_create_validation_errors(pg_stack, tenant_factory):
    _, key = tenant_factory()
    items = photos("train", 2, ["bag", "coat"])
    files, data = image_multipart(items)
    with pg_stack.client(key) as c:
        # wrong media type (JSON is accepted: tests/hostile/test_json_uploads.py)
        assert_problem(c.post("/adaptations", content=b"images", headers={"content-type": "text/plain"}), 415)
        # nothing uploaded
        assert_problem(c.post("/adaptations", files=[("config", (None, "{}"))]), 422, "images")
        # labels do not match images
        assert_problem(c.post("/adaptations", files=files, data={"labels": ["bag"]}), 422,
                       "labels")
        # config: not JSON, unknown section, unknown field, bad value, above the epoch limit
        assert_problem(c.post("/adaptations", files=files, data={**data, "config": "{"}), 422,
                       "config")
        assert_problem(c.post("/adaptations", files=files,
                              data={**data, "config": json.dumps({"optim": {}})}), 422, "config.optim")
        body = assert_problem(c.post("/adaptations", files=files, data={
            **data, "config": json.dumps({"adapter": {"bogus_field": 1}})}), 422, "config.adapter")
        assert "bogus_field" in body["detail"]
        body = assert_problem(c.post("/adaptations", files=files, data={
            **data, "config": json.dumps({"train": {"epochs": -3}})}), 422, "config.train")
        assert "epochs" in body["detail"]
        assert_problem(c.post("/adaptations", files=files, data={
            **data, "config": json.dumps({"train": {"epochs": 100000}})}), 422, "config.train")
        # a label outside class_names; a single class
        assert_problem(c.post("/adaptations", files=files,
                              data={**data, "class_names": ["bag", "dress"]}), 422, "labels")
        one = image_multipart(photos("train", 2, ["bag"]))
        assert_problem(c.post("/adaptations", files=one[0], data=one[1]), 422, "class_names")
        # not an image
        bad = [("images", ("a.png", b"not an image", "image/png")), files[1]]
        assert_problem(c.post("/adaptations", files=bad, data={"labels": ["bag", "coat"]}), 422,
                       "images[0]")
        # nothing was created by any of the above
        assert c.get("/adaptations").json()["total"] == 0


@pytest.mark.parametrize("entries,symlinks,status", [
    ({"../evil/x.png": b"x", "a/y.png": b"y"}, None, 422),
    ({"/abs/x.png": b"x", "a/y.png": b"y"}, None, 422),
    ({"a/x.png": b"x"}, {"b/link.png": "/etc/passwd"}, 422),
    ({"a/inner.zip": b"PK\x03\x04rest", "b/y.png": b"y"}, None, 422),
    ({"a/x.png": b"PK\x03\x04nested", "b/y.png": b"y"}, None, 422),
    ({"a/bomb.png": b"\0" * (25 * 1024 * 1024), "b/y.png": b"y"}, None, 413),
    ({"a/bomb.png": b"\0" * (5 * 1024 * 1024), "b/y.png": b"y"}, None, 413),
    ({"x.png": b"x"}, None, 422),
])
def test_archive_rejections(pg_stack, tenant_factory, entries, symlinks, status):
    _, key = tenant_factory()
    png = _png()
    entries = {k: (png if v in (b"x", b"y") else v) for k, v in entries.items()}
    archive = make_zip(entries, symlinks)
    with pg_stack.client(key) as c:
        resp = c.post("/adaptations", files={"archive": ("data.zip", archive, "application/zip")})
        assert_problem(resp, status, "archive")
    with pg_stack.client(key) as c:
        resp = c.post("/adaptations", files={"archive": ("data.zip", b"not a zip", "application/zip")})
        assert_problem(resp, 422, "archive")


def test_archive_upload_and_delete(pg_stack, tenant_factory):
    _, key = tenant_factory()
    archive = class_zip(photos("train", 2, ["bag", "coat", "dress"]), top="photos")
    with pg_stack.client(key) as c:
        resp = c.post("/adaptations", files={"archive": ("d.zip", archive, "application/zip")},
                      data={"config": json.dumps({"train": {"epochs": 1}})})
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert resp.headers["location"].endswith(f"/adaptations/{job['id']}")
        assert job["class_names"] == ["bag", "coat", "dress"] and job["num_images"] == 6
        assert job["status"] in ("queued", "running", "succeeded")
        assert c.delete(f"/adaptations/{job['id']}").status_code == 204
        assert_problem(c.get(f"/adaptations/{job['id']}"), 404)
        assert_problem(c.delete(f"/adaptations/{job['id']}"), 404)
    assert not list(pg_stack.blob_root.glob(f"tenants/*/adaptations/{job['id']}"))


def test_not_ready_adapter_is_409(pg_stack, tenant_factory):
    tenant_id, key = tenant_factory()
    queued = make_adaptation(pg_stack.database_url, tenant_id, JobStatus.queued)
    failed = make_adaptation(pg_stack.database_url, tenant_id, JobStatus.failed, error="boom")
    png = _png()
    with pg_stack.client(key) as c:
        for job_id, reason in ((queued, "queued"), (failed, "failed")):
            body = assert_problem(c.post(f"/classify/{job_id}",
                                         files=[("images", ("a.png", png, "image/png"))]), 409)
            assert body["reason"] == reason
            checkpoint = assert_problem(c.get(f"/adaptations/{job_id}/checkpoint"), 409)
            assert checkpoint["reason"] == reason
            # one state, one kind on every route (the checkpoint route said 'not-ready')
            assert body["type"] == checkpoint["type"] and body["type"].endswith("/adapter-not-ready")
        assert "boom" in c.get(f"/adaptations/{failed}").json()["error"]


def test_list_is_paginated_newest_first(pg_stack, tenant_factory):
    tenant_id, key = tenant_factory()
    ids = [make_adaptation(pg_stack.database_url, tenant_id) for _ in range(3)]
    with pg_stack.client(key) as c:
        page = c.get("/adaptations", params={"limit": 2}).json()
        assert page["total"] == 3 and [i["id"] for i in page["items"]] == ids[::-1][:2]
        rest = c.get("/adaptations", params={"limit": 2, "offset": 2}).json()
        assert [i["id"] for i in rest["items"]] == [ids[0]]
        assert_problem(c.get("/adaptations", params={"limit": 0}), 422, "limit")
        assert_problem(c.get("/adaptations", params={"status": "bogus"}), 422, "status")


def test_classify_input_errors(pg_stack, tenant_factory):
    tenant_id, key = tenant_factory()
    job = make_adaptation(pg_stack.database_url, tenant_id, JobStatus.succeeded)
    with pg_stack.client(key) as c:
        # checkpoint is missing for this hand-made row: still a problem, not a 500
        resp = c.post(f"/classify/{job}", json={"images": []})
        assert_problem(resp, 422, "images")
        assert_problem(c.post(f"/classify/{job}", json={"images": ["%%%"]}), 422, "images[0]")
        assert_problem(c.post(f"/classify/{job}", content=b"{", headers={
            "content-type": "application/json"}), 422)
        assert_problem(c.post(f"/classify/{job}", content=b"x", headers={
            "content-type": "text/plain"}), 415)
        assert_problem(c.post(f"/classify/{job}", files=[("images", ("a.png", b"zz", "image/png"))]),
                       422, "images[0]")
        assert_problem(c.post(f"/classify/{job}", files=[("images", ("a.png", _png(), "image/png"))],
                              data={"top_k": "zero"}), 422, "top_k")


def test_odd_inputs_never_500(pg_stack, tenant_factory):
    tenant_id, key = tenant_factory()
    job = make_adaptation(pg_stack.database_url, tenant_id, JobStatus.succeeded)
    png = _png()
    files, data = image_multipart(photos("train", 1, ["bag", "coat"]))
    cases = [
        ("POST", "/adaptations", dict(files=files + [("config", ("c.json", b"{}", "application/json"))],
                                      data=data)),
        ("POST", "/adaptations", dict(files=files + [("labels", ("l", b"bag", "text/plain"))] * 2)),
        ("POST", "/adaptations", dict(files=files, data={**data, "class_names": "[1, 2]"})),
        ("POST", "/adaptations", dict(files=files, data={**data, "class_names": "[\"bag\""})),
        ("POST", "/adaptations", dict(files=files, data={**data, "class_names": ["bag", "bag"]})),
        ("POST", "/adaptations", dict(files=files, data={**data, "config": "[1]"})),
        ("POST", "/adaptations", dict(files=files, data={**data, "config": '{"train": 3}'})),
        ("POST", "/adaptations", dict(files=files, data=data,
                                      headers={"Idempotency-Key": "k" * 300})),
        ("POST", "/adaptations", dict(content=b"--x\r\nbroken", headers={
            "content-type": "multipart/form-data; boundary=x"})),
        ("POST", "/adaptations", dict(content=b"", headers={"content-type": "multipart/form-data"})),
        ("POST", f"/classify/{job}", dict(json={"images": [png.hex()], "top_k": 0})),
        ("POST", f"/classify/{job}", dict(json={"images": ["aGVsbG8="], "class_names": []})),
        ("POST", f"/classify/{job}", dict(json={"images": ["aGVsbG8="], "extra": 1})),
        ("POST", f"/classify/{job}", dict(json=[1, 2])),
        ("POST", f"/classify/{job}", dict(files=[("images", ("a.png", png, "image/png"))] * 65)),
        ("POST", f"/classify/{job}", dict(files=[("images", ("a.png", png, "image/png")),
                                                 ("class_names", ("n", b"x", "text/plain"))])),
        ("POST", f"/classify/{job}", dict(files=[("images", ("a.png", png, "image/png"))],
                                          data={"class_names": "[\"a\", 3]"})),
        ("POST", f"/classify/{job}", dict(files=[("images", ("a.png", png, "image/png"))],
                                          params={"top_k": "-1"})),
    ]
    with pg_stack.client(key) as c:
        for method, path, kwargs in cases:
            resp = c.request(method, path, **kwargs)
            assert 400 <= resp.status_code < 500, (path, kwargs.get("data"), resp.status_code, resp.text)
            assert resp.headers["content-type"].startswith(PROBLEM), resp.text
