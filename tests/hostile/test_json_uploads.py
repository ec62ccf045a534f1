"""Training uploads as JSON with base64 images (issue 11, item 7) on a real server: the same
checks, limits (decoded bytes), error kinds and Idempotency-Key replays as multipart; JSON's own
faults name the member (``images[1].data``). Limits of ``hostile_stack``: 1 MiB per image,
3 MiB per request, 2 MiB per JSON body, 20 images."""

from __future__ import annotations

import base64
import json
import os

import pytest
from PIL import Image

from utils.factories import make_zip
from utils.hostile import assert_nothing_stored, assert_problem, encode


def _png(color: str, size: int = 8) -> bytes:
    return encode(Image.new("RGB", (size, size), color), "PNG")


def _noise_png(side: int) -> bytes:
    return encode(Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)), "PNG")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _body(images: list[tuple[bytes, str]], **extra) -> dict:
    return {"images": [{"data": _b64(d), "label": label, "filename": f"{k}.png"}
                       for k, (d, label) in enumerate(images)], **extra}


PAIR = [(_png("red"), "cat"), (_png("blue"), "dog")]


def test_json_upload_is_stored_as_sent_and_replays(hostile_stack, new_tenant):
    tenant_id, key = new_tenant
    body = _body(PAIR, class_names=["dog", "cat"], config={"train": {"epochs": 1}})
    with hostile_stack.client(key) as c:
        first = c.post("/adaptations", json=body, headers={"Idempotency-Key": "json-1"})
        assert first.status_code == 202, first.text
        job = first.json()
        assert job["class_names"] == ["dog", "cat"] and job["num_images"] == 2
        assert job["train_config"]["epochs"] == 1
        assert first.headers["location"].endswith(f"/adaptations/{job['id']}")
        stored = sorted((hostile_stack.blob_root / "tenants" / tenant_id).rglob("uploads/*"))
        assert [p.read_bytes() for p in stored] == [d for d, _ in PAIR]  # decoded, byte for byte
        # the same body with the same key: the same job; another body: 422
        again = c.post("/adaptations", json=body, headers={"Idempotency-Key": "json-1"})
        assert again.status_code == 202 and again.json()["id"] == job["id"]
        other = _body(PAIR[::-1], class_names=["dog", "cat"], config={"train": {"epochs": 1}})
        assert_problem(c.post("/adaptations", json=other, headers={"Idempotency-Key": "json-1"}),
                       422, "Idempotency-Key")
        # the multipart form of the same request is the same request (one request hash)
        files = [("images", (f"{k}.png", d, "image/png")) for k, (d, _) in enumerate(PAIR)]
        form = c.post("/adaptations", files=files, headers={"Idempotency-Key": "json-1"},
                      data={"labels": ["cat", "dog"], "class_names": '["dog", "cat"]',
                            "config": '{"train": {"epochs": 1}}'})
        assert form.status_code == 202 and form.json()["id"] == job["id"], form.text
        assert c.get("/adaptations").json()["total"] == 1


@pytest.mark.parametrize("body,status,field", [
    ({"images": [{"data": "not base64!", "label": "cat"}] + _body(PAIR)["images"]}, 422,
     "images[0].data"),
    ({"images": _body(PAIR)["images"] + [{"data": "iVBORw0KGgo", "label": "cat"}]}, 422, "images[2].data"),
    ({"images": [{"data": _b64(b"not an image"), "label": "cat", "filename": "x.png"}]
      + _body(PAIR)["images"]}, 422, "images[0] (x.png)"),
    ({"images": [{"data": _b64(PAIR[0][0]), "label": 3}, _body(PAIR)["images"][1]]}, 422,
     "images[0].label"),
    ({"images": [{"data": _b64(PAIR[0][0]), "label": " "}, _body(PAIR)["images"][1]]}, 422,
     "images[0].label"),
    ({"images": [{"data": _b64(PAIR[0][0])}, _body(PAIR)["images"][1]]}, 422, "images[0].label"),
    ({"images": "abc"}, 422, "images"),
    ({"images": []}, 422, "images"),
    ([1, 2], 422, "body"),
    (_body(PAIR, class_names="cat"), 422, "class_names"),
    (_body(PAIR, class_names=["cat", "bird"]), 422, "labels"),
    (_body(PAIR, config={"train": {"epochs": -1}}), 422, "config.train"),
    (_body(PAIR, config={"train": {"epochs": 10**30}}), 422, "config.train.epochs"),
    # mixing in the multipart form's fields: JSON has no `labels` or `archive`
    (_body(PAIR, labels=["cat", "dog"]), 422, "labels"),
    (_body(PAIR, archive=_b64(make_zip({"cat/a.png": PAIR[0][0]}))), 422, "archive"),
    # limits count decoded bytes: 1 MiB per image, 3 MiB per request, 20 images
    (_body([(b"\x89PNG" + b"\0" * (1024 * 1024), "cat"), PAIR[1]]), 413, "images[0]"),
    (_body([(PAIR[k % 2][0], f"c{k % 2}") for k in range(21)]), 413, "images"),
])
def test_bad_json_uploads(hostile_stack, new_tenant, body, status, field):
    tenant_id, key = new_tenant
    with hostile_stack.client(key) as c:
        problem = assert_problem(c.post("/adaptations", json=body), status, field)
        assert problem["type"].endswith({413: "/too-large"}.get(status, problem["type"]))
        assert_nothing_stored(hostile_stack, c, tenant_id)


def test_json_body_over_limit_and_media_types(hostile_stack, new_tenant):
    tenant_id, key = new_tenant
    noise = [_noise_png(500) for _ in range(5)]  # ~750 kB each, ~1 MB in base64: a 5 MB body
    assert all(700_000 < len(d) < 1024 * 1024 for d in noise)
    with hostile_stack.client(key) as c:
        # over the request limit (3 MiB + 1 MB) too
        assert_problem(c.post("/adaptations", json=_body(
            [(d, f"c{k % 2}") for k, d in enumerate(noise)])), 413, "body")
        assert_problem(c.post("/adaptations", content=b"{}", headers={"content-type": "text/plain"}),
                       415)
        assert_problem(c.post("/adaptations", content=b"{\"images\": [", headers={
            "content-type": "application/json"}), 422, "body")
        deep = b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # was a RecursionError: 500
        assert_problem(c.post("/adaptations", content=deep, headers={
            "content-type": "application/json"}), 422, "body")
        assert_nothing_stored(hostile_stack, c, tenant_id)


@pytest.mark.parametrize("path", ["/adaptations", "/classify/zeroshot"])
def test_json_body_has_its_own_smaller_limit(hostile_stack, new_tenant, path):
    """JSON is parsed in memory (~2.5x the body): past ``upload_json_max_bytes`` (2 MiB here,
    under the 3 MiB multipart limit) a 413 points to multipart, whether the length is declared
    (refused before reading) or the body comes chunked (refused while reading)."""
    tenant_id, key = new_tenant
    noise = [_noise_png(500) for _ in range(3)]  # ~1 MB each in base64: a ~3 MB body
    if path == "/adaptations":
        raw = json.dumps(_body([(d, f"c{k % 2}") for k, d in enumerate(noise)])).encode()
    else:
        raw = json.dumps({"images": [_b64(d) for d in noise]}).encode()
    assert 2 * 1024 * 1024 < len(raw) < 3 * 1024 * 1024
    headers = {"content-type": "application/json"}
    with hostile_stack.client(key) as c:
        for content in (raw, iter([raw[i:i + 65536] for i in range(0, len(raw), 65536)])):
            body = assert_problem(c.post(path, content=content, headers=headers), 413, "body")
            assert "multipart" in body["detail"] and str(2 * 1024 * 1024) in body["detail"], body
        assert_nothing_stored(hostile_stack, c, tenant_id)
