"""Request ids: every request gets one, its log lines carry it, and the answer echoes it.

A client's ``X-Request-ID`` is kept when it is 1-128 characters of ``[A-Za-z0-9._:-]``
(anything else is replaced, so a header cannot forge log lines); otherwise a new uuid4 hex is
made. The id is set in ``service.logs.request_id_var`` for the request's whole handling
(thread-pool handlers included: they run in a copy of the context) and sent back as
``X-Request-ID`` on every answer, errors included.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from service.logs import request_id_var

HEADER = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    """Pure ASGI middleware (no body buffering) that sets and echoes the request id."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Handle one ASGI call; non-HTTP scopes pass through untouched."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", []) if k == HEADER), b"")
        rid = given.decode("ascii") if _VALID.fullmatch(given) else uuid.uuid4().hex
        token = request_id_var.set(rid)

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode("ascii"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
