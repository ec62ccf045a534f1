"""Idempotency-Key: same key and body -> the original job; same key, other body -> 422."""

from __future__ import annotations

import json

from utils.factories import image_multipart, photos


def test_idempotent_create(pg_stack, tenant_factory):
    _, key = tenant_factory()
    files, data = image_multipart(photos("train", 2, ["bag", "coat"]))
    data = {**data, "config": json.dumps({"train": {"epochs": 1}})}
    headers = {"Idempotency-Key": "order-42"}
    with pg_stack.client(key) as c:
        first = c.post("/adaptations", files=files, data=data, headers=headers)
        assert first.status_code == 202, first.text
        again = c.post("/adaptations", files=files, data=data, headers=headers)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]
        assert c.get("/adaptations").json()["total"] == 1

        other = image_multipart(photos("train", 2, ["bag", "coat"], skip=2))
        clash = c.post("/adaptations", files=other[0], data={**other[1], "config": data["config"]},
                       headers=headers)
        assert clash.status_code == 422
        assert clash.headers["content-type"].startswith("application/problem+json")
        assert clash.json()["field"] == "Idempotency-Key"

        # without the header, the same body makes a new job
        fresh = c.post("/adaptations", files=files, data=data)
        assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]
        for job_id in (first.json()["id"], fresh.json()["id"]):
            assert c.delete(f"/adaptations/{job_id}").status_code == 204
        # the key is free again once its job is deleted
        reuse = c.post("/adaptations", files=other[0], data={**other[1], "config": data["config"]},
                       headers=headers)
        assert reuse.status_code == 202
        assert c.delete(f"/adaptations/{reuse.json()['id']}").status_code == 204


def test_idempotency_key_is_per_tenant(pg_stack, tenant_factory):
    (_, key_a), (_, key_b) = tenant_factory(), tenant_factory()
    files, data = image_multipart(photos("train", 2, ["bag", "coat"]))
    data = {**data, "config": json.dumps({"train": {"epochs": 1}})}
    ids = []
    for key in (key_a, key_b):
        with pg_stack.client(key) as c:
            resp = c.post("/adaptations", files=files, data=data, headers={"Idempotency-Key": "k"})
            assert resp.status_code == 202
            ids.append(resp.json()["id"])
            assert c.delete(f"/adaptations/{ids[-1]}").status_code == 204
    assert ids[0] != ids[1]
