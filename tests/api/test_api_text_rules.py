"""The text rule of api/text.py on every JSON body that stores or sends text back, on the real
stack (PostgreSQL, one keep-alive connection per test): lone surrogates, repeated member names,
invisible format characters and loose types are a 422 naming the member and store nothing; a row
that already holds a lone surrogate is answered (U+FFFD), never a 500."""

from __future__ import annotations

import base64
import json

import pytest

from utils.factories import make_adaptation, photos, read_adaptation

pytestmark = pytest.mark.slow


def _json(c, method: str, url: str, text: str, headers: dict | None = None):
    """Send ``text`` as the raw JSON body (escapes such as \\ud800 kept as written)."""
    return c.request(method, url, content=text.encode(),
                     headers={"Content-Type": "application/json", **(headers or {})})


def _refused(resp, field: str, kind: str = "validation-error") -> dict:
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    assert (problem["field"], problem["type"].rsplit("/", 1)[1]) == (field, kind), problem
    return problem


def _image_body(**members: str) -> str:
    """A JSON ``POST /adaptations`` body with extra ``members`` given as raw JSON text."""
    images = [{"data": base64.b64encode(path.read_bytes()).decode(), "label": label}
              for label, path in photos("train", 1, ["bag", "coat"])]
    return json.dumps({"images": images, "config": {"train": {"epochs": 1}}})[:-1] + \
        "".join(f', "{k}": {v}' for k, v in members.items()) + "}"


@pytest.mark.parametrize("members,field", [
    ({"name": '"\\ud800"'}, "name"),
    ({"metadata": '{"k": "\\udfff"}'}, "metadata.k"),
    ({"metadata": '{"\\ud800": "v"}'}, "metadata"),
    ({"metadata": '{"a": "1", "a": "2"}'}, "metadata.a"),
    ({"class_names": '["bag", "\\ud800"]'}, "class_names[1]"),
    ({"config": '{"train": {"epochs": 1}, "train": {"epochs": 2}}'}, "config"),  # 2nd config
    ({"callback_url": '"http://example.com/\\ud800"'}, "callback_url"),
    ({"name": '"a\\u202eb"'}, "name"),
])
def test_post_json_refuses_unencodable_repeated_or_invisible_text(pg_stack, tenant_factory,
                                                                  members, field):
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        _refused(_json(c, "POST", "/adaptations", _image_body(**members)), field)
        assert c.get("/adaptations").json()["total"] == 0  # nothing stored, connection alive


def test_patch_refuses_what_post_refuses_and_parses_json_alike(pg_stack, tenant_factory):
    tenant, key = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant, name="kept",
                             user_metadata={"k": "v"})
    with pg_stack.client(key) as c:
        for text, field in (('{"metadata": {"k": "\\ud800"}}', "metadata.k"),
                            ('{"name": "\\udfff"}', "name"),
                            ('{"metadata": {"a": "1", "a": "2"}}', "metadata.a"),
                            ('{"name": "x", "name": "y"}', "name"),
                            ('{"name": "a\\u200bb"}', "name"), ('{"name": 5}', "name")):
            _refused(_json(c, "PATCH", f"/adaptations/{job_id}", text), field)
            got = c.get(f"/adaptations/{job_id}")
            assert got.status_code == 200 and (got.json()["name"], got.json()["metadata"]) == \
                ("kept", {"k": "v"})
        patch = _refused(_json(c, "PATCH", f"/adaptations/{job_id}", "{bad"), "body")
        post = _refused(_json(c, "POST", "/adaptations", "{bad"), "body")
        assert patch["detail"] == post["detail"]


def test_a_stored_lone_surrogate_is_answered_not_a_500(pg_stack, tenant_factory):
    """A row written before these checks (PostgreSQL's json type keeps the \\ud800 escape):
    get, list, cancel and patch answer it with U+FFFD; the cancel is done once, answered 200."""
    tenant, key = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant, user_metadata={"k": "a\ud800"},
                             class_names=["bag", "\udfff"])
    with pg_stack.client(key) as c:
        for resp in (c.get(f"/adaptations/{job_id}"), c.get("/adaptations"),
                     c.post(f"/adaptations/{job_id}/cancel"),
                     c.patch(f"/adaptations/{job_id}", json={"name": "fixed"})):
            assert resp.status_code == 200, resp.text
            job = resp.json()["items"][0] if "items" in resp.json() else resp.json()
            assert job["metadata"] == {"k": "a\ufffd"} and job["class_names"] == ["bag", "\ufffd"]
        assert read_adaptation(pg_stack.database_url, job_id).status == "canceled"
        assert c.get(f"/adaptations/{job_id}").json()["status"] == "canceled"


def test_key_bodies_are_strict_and_key_names_follow_the_name_rule(pg_stack, tenant_factory):
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        for text, field in (('{"name": "\\u0000"}', "name"), ('{"name": "\\ud800"}', "name"),
                            ('{"name": "a\\u202eb"}', "name"), ('{"name": "  "}', "name"),
                            ('{"name": "a", "name": "b"}', "name"), ("{bad", "body")):
            _refused(_json(c, "POST", "/keys", text), field)
        assert len(c.get("/keys").json()["items"]) == 1  # nothing created
        key_id = c.get("/keys").json()["items"][0]["id"]
        for text in ('{"overlap_s": true}', '{"overlap_s": "3600"}', '{"overlap_s": 1.5}'):
            _refused(_json(c, "POST", f"/keys/{key_id}/rotate", text), "overlap_s")
        assert c.get("/keys").json()["items"][0]["expires_at"] is None  # not rotated
        assert c.post("/keys", json={"name": "👩‍💻 ci"}).status_code == 201  # ZWJ emoji kept


@pytest.mark.parametrize("value", ["a\tb", "é", "", "x" * 201])  # (DEL: uvicorn's 400)
def test_idempotency_key_is_printable_ascii(pg_stack, tenant_factory, value):
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        resp = _json(c, "POST", "/adaptations", _image_body(),
                     headers={"Idempotency-Key": value.encode("latin-1")})
        _refused(resp, "Idempotency-Key")
        assert c.get("/adaptations").json()["total"] == 0
