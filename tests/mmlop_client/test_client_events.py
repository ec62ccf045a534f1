"""The client's ``events``, ``wait`` over events, ``cancel`` and ``name``/``metadata`` against the
real embedded service (SQLite, filesystem broker, a Celery worker training on the tiny
backbone)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import httpx
import pytest

from mmlop_client import (Adaptation, AdaptationEvent, AsyncClient, Client, MMLoPAPIError,
                          MMLoPJobError)
from utils.factories import make_tenant

from test_client_embedded import FAST, photo_folder

pytestmark = pytest.mark.slow


def route_count(stack, method: str, route: str) -> float:
    """``mmlop_http_requests_total`` of one route on the API's /metrics."""
    lines = httpx.get(stack.base_url + "/metrics", timeout=10).text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("mmlop_http_requests_total{") and f'method="{method}"' in line
               and f'route="{route}"' in line)


def test_events_wait_list_by_name_and_metadata(embedded_stack, tmp_path):
    _, key = make_tenant(embedded_stack.database_url)
    folder = photo_folder(tmp_path / "photos")
    with Client(embedded_stack.base_url, key) as c:
        job = c.create_adaptation(folder, config={**FAST, "epochs": 10}, name="shoes v1",
                                  metadata={"project": "shoes", "run": "1"})
        assert (job.name, job.metadata) == ("shoes v1", {"project": "shoes", "run": "1"})
        # another name is another request: a new job, not the first one replayed
        other = c.create_adaptation(folder, config={**FAST, "epochs": 10}, name="shoes v2")
        assert other.id != job.id
        c.cancel(other.id)

        events = list(c.events(job.id, timeout=120))
        assert all(isinstance(e, AdaptationEvent) and e.id == job.id for e in events)
        assert events[0].event == "status" and events[-1].status == "succeeded"
        assert events[-1].done and not any(e.done for e in events[:-1])
        ids = [tuple(map(int, e.event_id.split("."))) for e in events]
        assert ids == sorted(set(ids))
        resumed = list(c.events(job.id, last_event_id=events[0].event_id, timeout=60))
        assert [e.event_id for e in resumed] == [events[-1].event_id]  # only what is newer
        assert list(c.events(job.id, last_event_id=events[-1].event_id)) == []  # 204

        assert [a.id for a in c.list(name="shoes v1").items] == [job.id]
        assert [a.id for a in c.list(metadata={"project": "shoes"}).items] == [job.id]
        assert c.list(metadata={"project": "shoes", "run": "2"}).total == 0
        assert [a.id for a in c.list(status="canceled").items] == [other.id]

        served = httpx.get(embedded_stack.base_url + "/openapi.json", timeout=30).json()
        schema = served["components"]["schemas"]["AdaptationEvent"]["properties"]
        assert {f.name for f in dataclasses.fields(AdaptationEvent)} - {"event", "event_id"} \
            == set(schema)

        # wait follows the events stream: one GET for the start, no polling
        job2 = c.create_adaptation(folder, config={**FAST, "epochs": 10}, name="shoes v3")
        gets = route_count(embedded_stack, "GET", "/adaptations/{adaptation_id}")
        streams = route_count(embedded_stack, "GET", "/adaptations/{adaptation_id}/events")
        seen: list[Adaptation] = []
        done = c.wait(job2.id, progress=seen.append, timeout=120, poll_interval=0.05)
        assert done.status == "succeeded" and seen[-1] == done and done.name == "shoes v3"
        assert done.progress.step == done.progress.steps
        assert route_count(embedded_stack, "GET", "/adaptations/{adaptation_id}") - gets == 1
        assert route_count(embedded_stack, "GET",
                           "/adaptations/{adaptation_id}/events") - streams >= 1


def test_cancel_and_async_events(embedded_stack, tmp_path):
    _, key = make_tenant(embedded_stack.database_url)
    folder = photo_folder(tmp_path / "photos")
    with Client(embedded_stack.base_url, key) as c:
        job = c.create_adaptation(folder, config={**FAST, "epochs": 200})
        canceled = c.cancel(job.id)
        assert canceled.status == "canceled" and c.cancel(job.id).status == "canceled"
        with pytest.raises(MMLoPJobError, match="canceled"):
            c.wait(job.id, timeout=30)
        assert c.get(job.id).status == "canceled"

        async def follow() -> list[AdaptationEvent]:
            async with AsyncClient(embedded_stack.base_url, key) as ac:
                assert (await ac.cancel(job.id)).status == "canceled"
                return [e async for e in ac.events(job.id, timeout=30)]

        events = asyncio.run(follow())
        assert [(e.event, e.status) for e in events] == [("status", "canceled")]
        with pytest.raises(MMLoPAPIError) as err:
            list(c.events("no-such-id"))
        assert err.value.status == 404 and err.value.kind == "not-found"
        c.delete(job.id)
        with pytest.raises(MMLoPAPIError) as err:
            c.cancel(job.id)
        assert err.value.status == 404


def test_events_reconnect_after_the_server_ends_a_stream(tmp_path, redis_broker_url):
    """Streams that end every second (``events_max_stream_s``) are resumed with Last-Event-ID:
    the job's two states arrive once each over several connections."""
    from utils.factories import make_adaptation
    from utils.stack import own_pg_stack

    with own_pg_stack(tmp_path, redis_broker_url, {"MMLOP_EVENTS_MAX_STREAM_S": "1",
                                                   "MMLOP_EVENTS_RETRY_MS": "100"}) as stack:
        tenant, key = make_tenant(stack.database_url)
        job_id = make_adaptation(stack.database_url, tenant)  # queued; no worker here
        route = "/adaptations/{adaptation_id}/events"
        with Client(stack.base_url, key) as c:
            threading.Timer(3.5, c.cancel, [job_id]).start()  # after about three streams
            events = list(c.events(job_id, timeout=30))
        assert [(e.event, e.status) for e in events] == [("status", "queued"),
                                                          ("status", "canceled")]
        assert route_count(stack, "GET", route) >= 3
