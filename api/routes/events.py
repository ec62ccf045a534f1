"""``GET /adaptations/{id}/events``: live status, progress, ETA and metrics as Server-Sent Events.

The stream reads the job's row every ``events_poll_interval_s`` (each read a short session in a
worker thread: no connection and no thread is held between reads) and sends one event per
change; sse-starlette sends keep-alive comments every ``events_keepalive_s``, ends the stream
when the client disconnects, and bounds each send (a client that stops reading is dropped).

Event ids are derived from the stored row alone, so they survive an API restart and any replica
can resume a stream: ``<attempt>.<phase>.<step>`` with phase 0 queued, 1 running, 2 terminal,
3 deleted, and step the training step of the stored progress (0 outside ``running``). They
increase (compared as integer triples) through a job's life: a new attempt resets progress but
increments ``attempt``. ``Last-Event-ID`` resumes after that id: only a newer state is sent, and
a client that already saw the terminal event gets 204 (an EventSource stops reconnecting).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import SessionDep, SettingsDep, TenantDep
from api.problem import ProblemError
from api.routes.adaptations import get_owned
from api.schemas import AdaptationEvent
from service.db import get_sessionmaker
from service.jobs import JobStatus
from service.models import Adaptation
from service.settings import Settings

router = APIRouter(prefix="/adaptations", tags=["adaptations"])

EventKey = tuple[int, int, int]
_PHASE = {JobStatus.queued: 0, JobStatus.running: 1}
_DELETED_PHASE = 3
_ID = re.compile(r"(\d{1,9})\.([0-3])\.(\d{1,9})")

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "`text/event-stream`: events `status` (the status changed; also the first "
                         "event), `progress` (a training step) and `deleted`, each with `id:`, "
                         "`retry:` and `data:` an AdaptationEvent (JSON); the stream ends after a "
                         "terminal status or `deleted`, or after `events_max_stream_s` (reconnect "
                         "with `Last-Event-ID`); the schema is that of each event's `data`",
          "model": AdaptationEvent},
    204: {"description": "`Last-Event-ID` names the terminal event: nothing more will come"},
}


def event_key(job: Adaptation) -> EventKey:
    """The ordering key of ``job``'s current state (see the module docstring)."""
    status = JobStatus(job.status)
    phase = _PHASE.get(status, 2)
    step = int((job.progress or {}).get("step") or 0) if status == JobStatus.running else 0
    return job.attempt, phase, step


def format_id(key: EventKey) -> str:
    """``attempt.phase.step``: the SSE ``id:`` of a state."""
    return ".".join(str(n) for n in key)


def parse_last_event_id(value: str | None) -> EventKey | None:
    """The key of a ``Last-Event-ID`` header (None when absent or empty).

    Raises:
        ProblemError: 422 (field ``Last-Event-ID``) when it is not an id this endpoint sent.
    """
    if not value:
        return None
    match = _ID.fullmatch(value.strip())
    if match is None:
        raise ProblemError(422, "Last-Event-ID must be an event id of this stream "
                           "(<attempt>.<phase>.<step>, e.g. 1.1.40)", kind="validation-error",
                           field="Last-Event-ID")
    return int(match[1]), int(match[2]), int(match[3])


def _read(tenant_id: str, job_id: str) -> tuple[AdaptationEvent, EventKey] | None:
    """The job's event data and key, or None once it is deleted (one short session)."""
    with get_sessionmaker()() as session:
        job = session.scalar(select(Adaptation).where(
            Adaptation.id == job_id, Adaptation.tenant_id == tenant_id,
            Adaptation.deleted_at.is_(None)))
        if job is None:
            return None
        return AdaptationEvent.model_validate(job), event_key(job)


async def _events(request: Request, tenant_id: str, job_id: str, seen: EventKey | None,
                  settings: Settings) -> AsyncIterator[ServerSentEvent]:
    """One event per new state after ``seen``, until a terminal state, deletion or the stream's
    time limit; counted in the ``mmlop_event_streams`` gauge while it runs."""
    gauge = request.app.state.metrics.event_streams
    gauge.inc()
    try:
        deadline = time.monotonic() + settings.events_max_stream_s
        while True:
            state = await run_in_threadpool(_read, tenant_id, job_id)
            if state is None:
                key = ((seen or (0,))[0], _DELETED_PHASE, 0)
                yield _event("deleted", AdaptationEvent(id=job_id, status=None), key, settings)
                return
            data, key = state
            if seen is None or key > seen:
                kind = "status" if seen is None or key[:2] != seen[:2] else "progress"
                yield _event(kind, data, key, settings)
                seen = key
            if data.status.terminal or time.monotonic() >= deadline:
                return
            await anyio.sleep(min(settings.events_poll_interval_s,
                                  max(deadline - time.monotonic(), 0)))
    finally:
        gauge.dec()


def _event(kind: str, data: AdaptationEvent, key: EventKey, settings: Settings) -> ServerSentEvent:
    return ServerSentEvent(data.model_dump_json(), event=kind, id=format_id(key),
                           retry=settings.events_retry_ms)


def _check(session: Any, tenant: Any, adaptation_id: str) -> tuple[str, EventKey, bool]:
    """(tenant id, current key, terminal) of the tenant's job; closes the session so that the
    stream holds no connection. Raises ProblemError 404 for unknown or other tenants' ids."""
    try:
        tenant_id = tenant.id
        job = get_owned(session, tenant, adaptation_id)
        return tenant_id, event_key(job), JobStatus(job.status).terminal
    finally:
        session.close()


class _EventStream(EventSourceResponse):
    """The stream's class as OpenAPI sees it (its media type on the class)."""

    media_type = "text/event-stream"


@router.get("/{adaptation_id}/events", response_class=_EventStream, responses=_RESPONSES,
            summary="Live status, progress, ETA and metrics (Server-Sent Events)")
async def adaptation_events(adaptation_id: str, request: Request, session: SessionDep,
                            tenant: TenantDep, settings: SettingsDep,
                            last_event_id: str | None = Header(None, alias="Last-Event-ID")
                            ) -> Response:
    """Stream the adaptation's changes; see the module docstring for ids and resumption."""
    seen = parse_last_event_id(last_event_id)
    tenant_id, key, terminal = await run_in_threadpool(_check, session, tenant, adaptation_id)
    if terminal and seen is not None and key <= seen:
        return Response(status_code=204)
    return EventSourceResponse(_events(request, tenant_id, adaptation_id, seen, settings),
                               ping=settings.events_keepalive_s, send_timeout=30,
                               headers={"Cache-Control": "no-store"})
