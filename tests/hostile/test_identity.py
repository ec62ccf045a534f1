"""Identity (issue 5): missing, malformed, revoked and other tenants' keys; other tenants' ids,
random UUIDs and non-UUID strings on every route answer the same 404; keys are stored only as
keyed hashes and never logged."""

from __future__ import annotations

import time
import uuid

import pytest
from PIL import Image
from sqlalchemy.orm import Session

from service.db import make_engine
from service.jobs import JobStatus
from service.models import ApiKey
from service.tenants import revoke_tenant
from utils.factories import make_adaptation, make_tenant
from utils.hostile import assert_problem, encode

ROUTES = [("GET", "/adaptations/{id}"), ("DELETE", "/adaptations/{id}"),
          ("GET", "/adaptations/{id}/checkpoint"), ("POST", "/classify/{id}")]
BAD_IDS = ["x", "not-a-uuid", "00000000-0000-0000-0000-000000000000", "%2e%2e",
           "' OR 1=1 --", "a" * 1000, "\U0001F600", str(uuid.uuid4()).upper(), "null"]


def _kwargs(method: str) -> dict:
    if method == "POST":
        png = encode(Image.new("RGB", (8, 8)), "PNG")
        return {"files": [("images", ("a.png", png, "image/png"))]}
    return {}


@pytest.fixture(scope="module")
def two_tenants(hostile_stack):
    """Tenant A with a succeeded and a queued job; tenant B with its key."""
    a_id, a_key = make_tenant(hostile_stack.database_url)
    b_id, b_key = make_tenant(hostile_stack.database_url)
    jobs = [make_adaptation(hostile_stack.database_url, a_id, JobStatus.succeeded),
            make_adaptation(hostile_stack.database_url, a_id, JobStatus.queued)]
    return a_key, b_key, jobs


@pytest.mark.parametrize("method,route", ROUTES)
def test_other_tenants_and_unknown_ids_are_the_same_404(hostile_stack, two_tenants, method, route):
    _, b_key, jobs = two_tenants
    with hostile_stack.client(b_key) as c:
        bodies = []
        for job_id in jobs + [str(uuid.uuid4())] + BAD_IDS:
            resp = c.request(method, route.format(id=job_id), **_kwargs(method))
            body = assert_problem(resp, 404)
            bodies.append({k: v for k, v in body.items() if k not in ("detail", "instance")})
            assert body["detail"].startswith("no adaptation")
        assert all(b == bodies[0] for b in bodies), bodies
        # an id holding a slash does not match the route: still a 404 problem, never more
        unrouted = assert_problem(c.request(method, route.format(id="..%2F..%2Fetc%2Fpasswd"),
                                            **_kwargs(method)), 404)
        assert unrouted["type"].endswith("/not-found"), unrouted  # was about:blank
        # B's list is empty: A's jobs never leak
        assert c.get("/adaptations").json()["total"] == 0


TIMING_PAIRS = 200
TIMING_BOUND_S = 0.003  # the largest median difference the README's claim allows


def test_no_timing_difference_between_other_tenants_and_random_ids(hostile_stack, two_tenants):
    """An equivalence test, not a tolerance: 200 interleaved pairs (another tenant's id, a
    random id; order alternating) give paired differences whose median's 99% bootstrap
    interval must lie inside +-3 ms. Pairing cancels the drift of a shared CPU; the interval
    (not a point estimate against a loose margin) is what bounds the difference. It would fail
    for a lookup that did, e.g., 5 ms more work for ids that exist."""
    import numpy as np

    _, _, jobs = two_tenants
    other, random_id = jobs[0], str(uuid.uuid4())
    diffs = []
    for _ in range(TIMING_PAIRS // 100):  # a fresh asking tenant per 100 pairs keeps under its rate limit
        _, key = make_tenant(hostile_stack.database_url)
        with hostile_stack.client(key) as c:
            for _ in range(10):  # warm-up: connection, caches, lazy imports
                c.get(f"/adaptations/{other}")
            for k in range(100):
                t = {}
                for job_id in ((other, random_id) if k % 2 else (random_id, other)):
                    t0 = time.perf_counter()
                    assert c.get(f"/adaptations/{job_id}").status_code == 404
                    t[job_id] = time.perf_counter() - t0
                diffs.append(t[other] - t[random_id])
    d = np.asarray(diffs)
    boot = np.median(np.random.default_rng(0).choice(d, size=(2000, d.size)), axis=1)
    low, high = np.quantile(boot, [0.005, 0.995])
    assert -TIMING_BOUND_S < low and high < TIMING_BOUND_S, (float(np.median(d)), float(low), float(high))


def test_missing_malformed_revoked_and_other_keys(hostile_stack, two_tenants):
    a_key, b_key, jobs = two_tenants
    headers = [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer mmlop_", "bearer x" * 50,
               f"Bearer {a_key[:-1]}", f"Bearer {a_key}x", "Bearer " + "mmlop_" + "a" * 300,
               f"Token {a_key}"]
    with hostile_stack.client() as c:
        for header in headers:
            h = {"Authorization": header} if header is not None else {}
            resp = c.get("/adaptations", headers=h)
            body = assert_problem(resp, 401)
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert a_key not in resp.text and "mmlop_" not in body["detail"]
    # A revoked tenant's key stops working at once
    r_id, r_key = make_tenant(hostile_stack.database_url)
    with hostile_stack.client(r_key) as c:
        assert c.get("/adaptations").status_code == 200
        engine = make_engine(hostile_stack.database_url)
        with Session(engine) as session:
            revoke_tenant(session, r_id)
            session.commit()
        engine.dispose()
        assert_problem(c.get("/adaptations"), 401)
    # A's key sees A's jobs; B's key does not
    with hostile_stack.client(a_key) as c:
        assert c.get(f"/adaptations/{jobs[0]}").status_code == 200
    with hostile_stack.client(b_key) as c:
        assert_problem(c.get(f"/adaptations/{jobs[0]}"), 404)


def test_keys_are_stored_hashed_and_never_logged(hostile_stack, two_tenants):
    a_key, _, _ = two_tenants
    engine = make_engine(hostile_stack.database_url)
    with Session(engine) as session:
        hashes = [k.key_hash for k in session.query(ApiKey).all()]
    engine.dispose()
    assert a_key not in hashes and all(len(h) == 64 for h in hashes)
    with hostile_stack.client(a_key) as c:
        c.get("/adaptations")
        c.get("/adaptations/" + str(uuid.uuid4()))
    with hostile_stack.client(a_key + "wrong") as c:
        c.get("/adaptations")
    log = hostile_stack.log_tail("api", chars=10_000_000)
    assert a_key not in log and a_key[6:20] not in log
