"""Abuse limits (issue 5): per-tenant rate limit (429 + Retry-After + RateLimit-* headers) and
quotas (adapters, concurrent jobs, stored bytes) from the settings of ``hostile_stack``."""

from __future__ import annotations

import os

from PIL import Image

from service.jobs import JobStatus
from utils.factories import make_adaptation, make_tenant
from utils.hostile import assert_problem, encode


def _pair(size: int = 8) -> list:
    if size > 8:
        img = [Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)) for _ in range(2)]
    else:
        img = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    return [("images", (f"{k}.png", encode(i, "PNG"), "image/png")) for k, i in enumerate(img)]


def test_rate_limit_per_tenant(hostile_stack):
    _, key = make_tenant(hostile_stack.database_url)
    _, other = make_tenant(hostile_stack.database_url)
    with hostile_stack.client(key) as c:
        first = c.get("/adaptations")
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == "300"
        remaining = int(first.headers["ratelimit-remaining"])
        assert 0 < int(first.headers["ratelimit-reset"]) <= 60
        refused = None
        # a fixed window may roll over mid-loop: allow one fresh window's worth more
        for _ in range(remaining + 300 + 2):
            resp = c.get("/adaptations")
            if resp.status_code == 429:
                refused = resp
                break
        assert refused is not None, "no 429 after the limit"
        body = assert_problem(refused, 429)
        assert body["type"].endswith("rate-limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 61
        assert refused.headers["ratelimit-remaining"] == "0"
    with hostile_stack.client(other) as c:  # another tenant is not affected
        assert c.get("/adaptations").status_code == 200


def test_quota_concurrent_jobs_and_adapters(hostile_stack):
    tenant_id, key = make_tenant(hostile_stack.database_url)
    with hostile_stack.client(key) as c:
        for _ in range(2):  # limit 2 queued/running
            assert c.post("/adaptations", files=_pair(), data={"labels": ["a", "b"]}
                          ).status_code == 202
        resp = c.post("/adaptations", files=_pair(), data={"labels": ["a", "b"]})
        body = assert_problem(resp, 429)
        assert body["reason"] == "concurrent_jobs" and resp.headers["retry-after"]
        # finished adaptations still count against the adapter quota (4)
        make_adaptation(hostile_stack.database_url, tenant_id, JobStatus.succeeded)
        make_adaptation(hostile_stack.database_url, tenant_id, JobStatus.failed)
        ids = [j["id"] for j in c.get("/adaptations").json()["items"]]
        assert len(ids) == 4
        # free a concurrent slot: now the adapter quota is what refuses
        queued = [j["id"] for j in c.get("/adaptations", params={"status": "queued"}).json()["items"]]
        make_adaptation(hostile_stack.database_url, tenant_id, JobStatus.succeeded)
        assert c.delete(f"/adaptations/{queued[0]}").status_code == 204
        body = assert_problem(c.post("/adaptations", files=_pair(), data={"labels": ["a", "b"]}),
                              409)
        assert body["reason"] == "adapters" and body["limit"] == 4
        assert c.get("/adaptations").json()["total"] == 4


def test_quota_stored_bytes(hostile_stack):
    tenant_id, key = make_tenant(hostile_stack.database_url)
    with hostile_stack.client(key) as c:
        first = c.post("/adaptations", files=_pair(450), data={"labels": ["a", "b"]})
        assert first.status_code == 202, first.text  # ~1.2 MB stored
        body = assert_problem(c.post("/adaptations", files=_pair(450), data={"labels": ["a", "b"]}),
                              409)
        assert body["reason"] == "stored_bytes" and body["limit"] == 1500000
        assert c.get("/adaptations").json()["total"] == 1
