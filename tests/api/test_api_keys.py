"""Per-key management on the real stack (issue 11 item 7): ``/keys`` list, create, revoke,
rotate with an overlap; expired keys are 401; ``last_used_at`` moves; tenants are isolated."""

from __future__ import annotations

import time

import pytest

from utils.factories import make_tenant

PROBLEM = "application/problem+json"


def _problem(resp, status: int, kind: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["type"].endswith("/" + kind), body
    return body


@pytest.fixture()
def owner(pg_stack):
    """(tenant id, first key, httpx client with it)."""
    tenant_id, key = make_tenant(pg_stack.database_url)
    with pg_stack.client(key) as c:
        yield tenant_id, key, c


def test_list_create_and_last_used(pg_stack, owner):
    _, key, c = owner
    items = c.get("/keys").json()["items"]
    assert len(items) == 1
    first = items[0]
    assert first["prefix"] == key[:12] and first["current"] and first["active"]
    assert first["last_used_at"] is not None  # this very request set it
    assert "key" not in first and "key_hash" not in first and key not in str(items)
    created = c.post("/keys", json={"name": "ci"})
    assert created.status_code == 201, created.text
    new = created.json()
    assert new["key"].startswith("mmlop_") and new["name"] == "ci" and not new["current"]
    assert new["last_used_at"] is None
    with pg_stack.client(new["key"]) as c2:
        listed = {k["id"]: k for k in c2.get("/keys").json()["items"]}
    assert listed[new["id"]]["last_used_at"] is not None and listed[new["id"]]["current"]
    assert "key" not in listed[new["id"]]
    # Throttled: an immediate second use does not rewrite it.
    again = {k["id"]: k for k in c.get("/keys").json()["items"]}
    assert again[first["id"]]["last_used_at"] == listed[first["id"]]["last_used_at"]
    _problem(c.post("/keys", json={"name": "x" * 201}), 422, "validation-error")
    _problem(c.post("/keys", json={"nope": 1}), 422, "validation-error")


def test_revoke_rules_and_isolation(pg_stack, owner):
    _, key, c = owner
    current = c.get("/keys").json()["items"][0]["id"]
    _problem(c.delete(f"/keys/{current}"), 409, "current-key")
    _problem(c.delete(f"/keys/{current}", params={"allow_current": "true"}), 409, "last-key")
    other = c.post("/keys", json={"name": "other"}).json()
    # Another tenant's key id is not found, for every operation.
    _, stranger_key = make_tenant(pg_stack.database_url)
    with pg_stack.client(stranger_key) as s:
        _problem(s.delete(f"/keys/{other['id']}"), 404, "not-found")
        _problem(s.post(f"/keys/{other['id']}/rotate"), 404, "not-found")
        assert other["id"] not in str(s.get("/keys").json())
    assert c.delete(f"/keys/{other['id']}").status_code == 204
    assert c.delete(f"/keys/{other['id']}").status_code == 204  # idempotent
    with pg_stack.client(other["key"]) as revoked:
        _problem(revoked.get("/keys"), 401, "unauthorized")
    _problem(c.post(f"/keys/{other['id']}/rotate"), 409, "key-inactive")
    # With a second active key, the calling key may revoke itself when it says so.
    spare = c.post("/keys").json()
    assert c.delete(f"/keys/{current}", params={"allow_current": "true"}).status_code == 204
    _problem(c.get("/keys"), 401, "unauthorized")
    with pg_stack.client(spare["key"]) as c2:
        states = {k["id"]: k["active"] for k in c2.get("/keys").json()["items"]}
    assert states == {current: False, other["id"]: False, spare["id"]: True}


def test_rotation_overlap_then_expiry(pg_stack, owner):
    _, old_key, c = owner
    old_id = c.get("/keys").json()["items"][0]["id"]
    _problem(c.post(f"/keys/{old_id}/rotate", json={"overlap_s": 7 * 24 * 3600 + 1}), 422,
             "validation-error")
    rotated = c.post(f"/keys/{old_id}/rotate", json={"overlap_s": 2})
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["key"] != old_key
    count = len(c.get("/keys").json()["items"])
    body = _problem(c.post(f"/keys/{old_id}/rotate", json={"overlap_s": 2}), 409,
                    "already-rotated")  # one successor per key, not one more per call
    assert "successor" in body["detail"] and len(c.get("/keys").json()["items"]) == count
    with pg_stack.client(new["key"]) as c2:
        old = {k["id"]: k for k in c2.get("/keys").json()["items"]}[old_id]
        assert old["expires_at"] is not None and old["active"]
        assert c.get("/keys").status_code == 200  # the overlap: both keys work
        time.sleep(2.2)
        body = _problem(c.get("/keys"), 401, "unauthorized")
        assert "expired" in body["detail"]
        assert c2.get("/keys").status_code == 200
        # overlap 0: the old key stops at once.
        newer = c2.post(f"/keys/{new['id']}/rotate", json={"overlap_s": 0}).json()
        _problem(c2.get("/keys"), 401, "unauthorized")
    with pg_stack.client(newer["key"]) as c3:
        assert c3.get("/adaptations").status_code == 200


def test_active_keys_are_capped(pg_stack, owner):
    from service.api_keys import MAX_ACTIVE_KEYS

    _, _, c = owner
    for _ in range(MAX_ACTIVE_KEYS - 1):
        assert c.post("/keys").status_code == 201
    body = _problem(c.post("/keys"), 409, "too-many-keys")
    assert "revoke" in body["detail"]
    first = c.get("/keys").json()["items"][0]["id"]
    _problem(c.post(f"/keys/{first}/rotate", json={"overlap_s": 60}), 409, "too-many-keys")
    spare = c.get("/keys").json()["items"][-1]["id"]
    # Without an overlap the old key stops at once: the count does not grow.
    rotated = c.post(f"/keys/{spare}/rotate", json={"overlap_s": 0})
    assert rotated.status_code == 201, rotated.text
    spare = rotated.json()["id"]
    assert c.delete(f"/keys/{spare}").status_code == 204
    assert c.post("/keys").status_code == 201
