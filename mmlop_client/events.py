"""What ``events(id)`` and ``wait`` need of ``GET /adaptations/{id}/events`` (Server-Sent Events),
shared by ``Client`` and ``AsyncClient``: request headers, one stream's events as typed
``AdaptationEvent`` objects, and when to reconnect.

A stream ends without a terminal event when the server's time limit (``events_max_stream_s``)
is reached or the connection breaks; the cursor then reconnects with ``Last-Event-ID`` after the
server's ``retry:`` delay, so no event is seen twice. A 204 answer means the last event seen was
the terminal one.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from .models import AdaptationEvent

# Answers of a server without the events endpoint (wait then polls instead).
NO_EVENTS_STATUSES = frozenset({404, 405, 406, 501})


class EventCursor:
    """Where a client is in one adaptation's event stream (last id, reconnection delay,
    consecutive failed connections)."""

    def __init__(self, adaptation_id: str, last_event_id: str | None, max_failures: int) -> None:
        self.path = f"/adaptations/{adaptation_id}/events"
        self.last_event_id = last_event_id
        self.retry_s = 1.0
        self.failures = 0
        self.max_failures = max_failures
        self.finished = False

    def request_kwargs(self, read_timeout: float | None) -> dict[str, Any]:
        """``stream()`` arguments of the next connection: ``Last-Event-ID`` once an event was
        seen; ``read_timeout`` seconds between two chunks (keep-alive comments count)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return dict(headers=headers, timeout=httpx.Timeout(30.0, read=read_timeout))

    def event(self, sse: ServerSentEvent) -> AdaptationEvent | None:
        """The typed event of ``sse`` (None for what carries no data: the blank line after a
        keep-alive comment, which httpx-sse reports as an event); records its id and delay."""
        if sse.retry is not None:
            self.retry_s = sse.retry / 1000
        if not sse.data:
            return None
        event = AdaptationEvent.from_sse(sse.event, sse.id, json.loads(sse.data))
        self.last_event_id, self.failures = sse.id, 0
        self.finished = event.done
        return event

    def no_content(self) -> None:
        """The server answered 204: the last event seen was the terminal one."""
        self.finished = True

    def failed(self, exc: Exception) -> float:
        """Seconds to wait before reconnecting after ``exc``; re-raises it after
        ``max_failures`` consecutive failed connections."""
        self.failures += 1
        if self.failures > self.max_failures:
            raise exc
        return self.retry_s
