"""``GET /adaptations/{id}/events`` (Server-Sent Events) against the real stack: a real worker
trains a small job while the stream is read with httpx; resumption with ``Last-Event-ID``; tenant
isolation; deletion; keep-alive comments, the bounded lifetime and disconnects on a stack with
short event settings (no stream holds a database connection: more streams than the pool)."""

from __future__ import annotations

import concurrent.futures
import json
import re
import threading
import time

import httpx
import pytest
from httpx_sse import EventSource

from utils.factories import image_multipart, make_adaptation, make_tenant, photos
from utils.stack import own_pg_stack

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "failed", "canceled"}


def read_events(client: httpx.Client, job_id: str, last_id: str | None = None,
                timeout: float = 120) -> tuple[httpx.Response, list]:
    """(response, [ServerSentEvent]) of one whole stream (until the server ends it)."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    with client.stream("GET", f"/adaptations/{job_id}/events", headers=headers,
                       timeout=httpx.Timeout(10, read=timeout)) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp, []
        # httpx-sse dispatches the blank line after a keep-alive comment as an event with no
        # data; the SSE spec does not (an empty data buffer dispatches nothing)
        return resp, [e for e in EventSource(resp).iter_sse() if e.data]


def key(event_id: str) -> tuple[int, ...]:
    return tuple(int(n) for n in event_id.split("."))


def test_stream_follows_training_to_the_end_and_resumes(pg_stack, tenant_factory):
    _, api_key = tenant_factory()
    files, data = image_multipart(photos("train", 4, ["bag", "coat", "sneaker"]))
    data["config"] = json.dumps({"train": {"epochs": 30, "shots": 4, "seed": 1}})
    with pg_stack.client(api_key) as c:
        job = c.post("/adaptations", files=files, data=data).json()
        resp, events = read_events(c, job["id"])
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert events, pg_stack.log_tail("api")
        kinds = [e.event for e in events]
        payloads = [json.loads(e.data) for e in events]
        assert kinds[0] == "status" and payloads[0]["status"] in ("queued", "running")
        assert all(e.retry == 2000 for e in events)
        ids = [key(e.id) for e in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), ids  # strictly increasing
        steps = [p["progress"]["step"] for e, p in zip(events, payloads)
                 if e.event == "progress"]
        assert len(steps) >= 2 and steps == sorted(steps), (kinds, steps)
        assert all(p["progress"]["eta_s"] is not None and p["progress"]["loss"] is not None
                   for e, p in zip(events, payloads) if e.event == "progress")
        assert kinds[-1] == "status" and payloads[-1]["status"] == "succeeded"
        assert payloads[-1]["metrics"]["train_images"] == 12 and payloads[-1]["finished_at"]
        assert [p["status"] for p in payloads[:-1]].count("succeeded") == 0

        # resume from the middle: only newer states, never one already seen
        middle = events[len(events) // 2].id
        resp, resumed = read_events(c, job["id"], last_id=middle)
        assert resp.status_code == 200 and resumed
        assert all(key(e.id) > key(middle) for e in resumed)
        assert json.loads(resumed[-1].data)["status"] == "succeeded"
        # resume after the terminal event: 204, nothing more will come
        resp, _ = read_events(c, job["id"], last_id=events[-1].id)
        assert resp.status_code == 204
        # a stream of a finished job is its terminal state alone
        _, again = read_events(c, job["id"])
        assert [e.event for e in again] == ["status"] and again[0].id == events[-1].id


def test_other_tenant_bad_header_and_unknown_id(pg_stack, tenant_factory):
    tenant_a, key_a = tenant_factory()
    _, key_b = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant_a)
    with pg_stack.client(key_b) as c:
        resp = c.get(f"/adaptations/{job_id}/events")
        assert resp.status_code == 404, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert c.get("/adaptations/no-such-id/events").status_code == 404
    with pg_stack.client() as anonymous:
        assert anonymous.get(f"/adaptations/{job_id}/events").status_code == 401
    with pg_stack.client(key_a) as c:
        for bad in ("nope", "1.9.0", "1.1", "-1.1.1"):
            resp = c.get(f"/adaptations/{job_id}/events", headers={"Last-Event-ID": bad})
            assert resp.status_code == 422 and resp.json()["field"] == "Last-Event-ID", resp.text


def test_deleted_while_streaming_ends_with_a_deleted_event(pg_stack, tenant_factory):
    tenant, api_key = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant)  # queued, never enqueued
    with pg_stack.client(api_key) as c:
        threading.Timer(1.0, lambda: c.delete(f"/adaptations/{job_id}")).start()
        _, events = read_events(c, job_id, timeout=30)
        assert [e.event for e in events] == ["status", "deleted"]
        assert json.loads(events[1].data) == {**json.loads(events[1].data), "id": job_id,
                                              "status": None}
        assert key(events[1].id) > key(events[0].id)
        assert c.get(f"/adaptations/{job_id}/events").status_code == 404


@pytest.fixture(scope="module")
def short_stack(tmp_path_factory, redis_broker_url):
    """An API (no worker) whose streams ping every 0.3 s and end after 6 s."""
    with own_pg_stack(tmp_path_factory.mktemp("events"), redis_broker_url,
                      {"MMLOP_EVENTS_KEEPALIVE_S": "0.3", "MMLOP_EVENTS_MAX_STREAM_S": "6",
                       "MMLOP_EVENTS_POLL_INTERVAL_S": "0.2"}) as stack:
        yield stack


def open_streams(stack) -> float:
    """Gauge ``mmlop_event_streams`` of the API's /metrics."""
    text = httpx.get(stack.base_url + "/metrics", timeout=10).text
    return float(re.search(r"^mmlop_event_streams (\S+)$", text, re.M).group(1))


def test_keepalive_comments_and_bounded_lifetime(short_stack):
    tenant, api_key = make_tenant(short_stack.database_url)
    job_id = make_adaptation(short_stack.database_url, tenant)
    with short_stack.client(api_key) as c:
        start = time.monotonic()
        with c.stream("GET", f"/adaptations/{job_id}/events") as resp:
            lines = list(resp.iter_lines())
        elapsed = time.monotonic() - start
        assert 5.5 < elapsed < 15, elapsed  # ended by the server: the client reconnects
        assert sum(line.startswith(":") for line in lines) >= 5, lines  # keep-alive comments
        first_id = next(line[4:] for line in lines if line.startswith("id: "))
        # the reconnection gets no event it saw: only keep-alives until the time limit
        with c.stream("GET", f"/adaptations/{job_id}/events",
                      headers={"Last-Event-ID": first_id}) as resp:
            again = list(resp.iter_lines())
        assert not any(line.startswith(("id:", "data:")) for line in again), again


def test_disconnects_release_the_stream_and_no_connection_is_held(short_stack):
    """20 concurrent streams (more than the database pool's 15 connections) while a plain GET
    still answers at once; every stream the clients drop is gone from the gauge well before the
    streams' 6 s limit would have ended them."""
    tenant, api_key = make_tenant(short_stack.database_url)
    job_id = make_adaptation(short_stack.database_url, tenant)
    started = threading.Barrier(21)

    def hold_one() -> int:
        with short_stack.client(api_key) as c, \
                c.stream("GET", f"/adaptations/{job_id}/events") as resp:
            lines = resp.iter_lines()  # kept: a dropped iterator closes the response
            assert next(lines).startswith("id: ")  # the first event came; stop reading
            started.wait(timeout=30)
            started.wait(timeout=30)
            return resp.status_code

    opened = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(hold_one) for _ in range(20)]
        started.wait(timeout=30)
        assert open_streams(short_stack) == 20
        with short_stack.client(api_key) as c:
            t0 = time.monotonic()
            assert c.get(f"/adaptations/{job_id}").status_code == 200
            assert time.monotonic() - t0 < 2
        started.wait(timeout=30)  # every client disconnects now
        assert [f.result() for f in futures] == [200] * 20
    deadline = time.monotonic() + 5
    while open_streams(short_stack) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_streams(short_stack) == 0
    assert time.monotonic() - opened < 5.5, "the streams ended by their time limit, not the disconnect"
