"""The client's exceptions: one base class, and ``MMLoPAPIError`` for every problem+json answer."""

from __future__ import annotations

from typing import Any


class MMLoPClientError(Exception):
    """Base class of every error the client raises."""


class MMLoPInputError(MMLoPClientError, ValueError):
    """A local input is unusable (a missing folder, a folder without class folders of images)."""


class MMLoPConnectionError(MMLoPClientError):
    """The server could not be reached (or the connection broke) after the retries."""


class MMLoPTimeoutError(MMLoPClientError, TimeoutError):
    """``wait`` ran out of time before the adaptation reached a terminal state."""


class MMLoPJobError(MMLoPClientError):
    """``wait`` saw the adaptation end ``failed`` or ``canceled``; ``.adaptation`` holds it
    (its ``error`` says why)."""

    def __init__(self, adaptation: Any) -> None:
        self.adaptation = adaptation
        why = f": {adaptation.error}" if adaptation.error else ""
        super().__init__(f"adaptation {adaptation.id} {adaptation.status}{why}")


class MMLoPAPIError(MMLoPClientError):
    """An error answer of the service (RFC 9457 ``application/problem+json``).

    Attributes:
        status: HTTP status code (e.g. 404, 422, 429).
        kind: last path segment of the problem ``type`` (``not-found``, ``invalid-image``,
            ``rate-limited``, ...); None for ``about:blank`` or a body that is not a problem.
        field: the offending input named by the server (``images[3] (cat.png)``,
            ``config.train``), or None.
        detail: the human-readable explanation (the body's text if it was not problem+json).
        title, type, instance, reason: the problem members of the same name (None if absent).
        retry_after: seconds the server asked to wait (``Retry-After``), or None.
        body: the whole decoded problem document (``{}`` if the body was not JSON).
    """

    def __init__(self, status: int, detail: str, *, kind: str | None = None,
                 field: str | None = None, title: str | None = None, type: str | None = None,
                 instance: str | None = None, reason: str | None = None,
                 retry_after: float | None = None, body: dict[str, Any] | None = None) -> None:
        self.status, self.detail, self.kind, self.field = status, detail, kind, field
        self.title, self.type, self.instance, self.reason = title, type, instance, reason
        self.retry_after = retry_after
        self.body = body or {}
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{self.status} {self.kind or self.title or 'error'}{where}: {self.detail}"

    @classmethod
    def from_response(cls, status: int, headers: Any, content: bytes) -> "MMLoPAPIError":
        """Build the error from an answer's status, headers and body (problem+json or not)."""
        import json

        retry_after = parse_retry_after(headers.get("retry-after"))
        try:
            body = json.loads(content or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = content.decode("utf-8", "replace").strip()[:500]
            return cls(status, text or f"HTTP {status}", retry_after=retry_after)
        type_ = body.get("type") if isinstance(body.get("type"), str) else None
        kind = type_.rstrip("/").rsplit("/", 1)[-1] if type_ and type_ != "about:blank" else None
        return cls(status, str(body.get("detail") or body.get("title") or f"HTTP {status}"),
                   kind=kind, field=_str(body.get("field")), title=_str(body.get("title")),
                   type=type_, instance=_str(body.get("instance")),
                   reason=_str(body.get("reason")), retry_after=retry_after, body=body)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay seconds or an HTTP date); None if absent
    or unreadable. Never negative."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from datetime import datetime, timezone
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
