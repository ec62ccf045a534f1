"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

One exception handler maps domain errors (``ProblemError``, ``mmlop_core`` errors, validation
and HTTP errors) to problem documents; anything unexpected becomes a logged 500 without details.
Answers name only what the client sent: errors about the server's own backbone, checkpoints or
outputs get a fixed detail, and their message (server paths, weights) goes to the log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.text import scrub

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://mmlop.dev/problems/"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


# Answer to every request that needs the backbone when it could not be loaded (/readyz, the 503s).
# Fixed text: the loader's exception names server paths; it goes to the log (issue 12 D.10).
BACKBONE_UNAVAILABLE = (
    "the backbone could not be loaded (the cause is in the API's log); point MMLOP_PRETRAINED at a "
    "local weights file, use MMLOP_PRETRAINED=none, or the offline tiny backbone "
    "(MMLOP_BACKBONE=mmlop-tiny MMLOP_PRETRAINED=fmnist)")

# Errors about what the server holds (its backbone, stored checkpoints, model outputs): their
# messages name blob and weights paths, so the answer gets this fixed text and the log gets the
# message. Keyed by problem kind.
_SERVER_SIDE_DETAILS = {
    "backbone-mismatch": "this adapter was trained on another backbone than the one this server "
                         "runs, so it cannot be used here; train it again",
    "checkpoint-unusable": "the stored checkpoint of this adapter cannot be used; train it again",
    "backbone-unavailable": BACKBONE_UNAVAILABLE,
    "non-finite-output": "the model produced non-finite scores (NaN or infinity); nothing was "
                         "served and the cause has been logged",
}


class ProblemError(Exception):
    """An error answered as a problem document.

    ``kind`` becomes the ``type`` URI (``https://mmlop.dev/problems/<kind>``); ``extra`` members
    (e.g. ``field``, ``reason``) are added at the top level as RFC 9457 extension members.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build an ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + kind if kind else "about:blank",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if kind:
        body["kind"] = kind  # the last segment of ``type``: what a program branches on
    body.update(extra)
    # Details quote what the client sent: a lone surrogate there must not fail the answer.
    return JSONResponse(scrub(body), status_code=status, headers=headers,
                        media_type=PROBLEM_MEDIA_TYPE)


def status_title(status: int) -> str:
    """The title of a problem with this HTTP status (its reason phrase)."""
    return _TITLES.get(status, "Error")


def _core_error_status(exc: Exception) -> tuple[int, str] | None:
    """Status and kind for an ``mmlop_core`` error, or None if ``exc`` is not one."""
    try:
        from mmlop_core import errors as core_errors
    except ImportError:  # pragma: no cover - core not installed
        return None
    table = [
        ("ConfigError", 422, "invalid-config"),
        ("ImageError", 422, "invalid-image"),
        ("DataError", 422, "invalid-data"),
        ("BackboneMismatchError", 409, "backbone-mismatch"),
        ("CheckpointError", 409, "checkpoint-unusable"),
        ("BackboneUnavailableError", 503, "backbone-unavailable"),
        ("TrainingCanceled", 409, "canceled"),
        ("NonFiniteOutputError", 500, "non-finite-output"),
        ("MMLoPError", 422, "invalid-input"),
    ]
    for name, status, kind in table:
        cls = getattr(core_errors, name, None)
        if cls is not None and isinstance(exc, cls):
            return status, kind
    return None


def _is_database_outage(exc: BaseException) -> bool:
    """True for connection-level database errors (server down, connection cut, pool timeout)."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler: map any exception to a problem document."""
    if isinstance(exc, ProblemError):
        return problem_response(
            request, exc.status, exc.detail, kind=exc.kind, title=exc.title,
            headers=exc.headers, **exc.extra,
        )
    if isinstance(exc, RequestValidationError):
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        field = ".".join(p for p in first["loc"] if p not in ("body", "query", "path", "header"))
        detail = f"{field or 'request'}: {first['msg']}"
        return problem_response(
            request, 422, detail, kind="validation-error", field=field or None, errors=errors
        )
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
        if exc.status_code == 404:  # no such route: the same kind as a missing resource
            detail = f"no route {request.method} {request.url.path}"
        return problem_response(
            request, exc.status_code, detail, headers=getattr(exc, "headers", None),
            kind={404: "not-found", 405: "method-not-allowed"}.get(exc.status_code),
        )
    from service.quotas import QuotaExceeded

    if isinstance(exc, QuotaExceeded):
        transient = exc.quota == "concurrent_jobs"
        return problem_response(
            request, 429 if transient else 409, str(exc), kind="quota-exceeded",
            reason=exc.quota, limit=exc.limit, used=exc.used,
            headers={"Retry-After": "30"} if transient else None)
    from service.blobs import BlobStoreConfigError, BlobStoreError

    if isinstance(exc, BlobStoreError):
        # The message names the bucket or endpoint: it goes to the log, the answer is fixed.
        logger.warning("blob store unavailable on %s %s: %s", request.method, request.url.path,
                       exc)
        detail = ("the blob store refuses the configured bucket (missing bucket, credentials "
                  "or permissions: see MMLOP_BLOB_URL and the store's credentials); nothing "
                  "stored is lost" if isinstance(exc, BlobStoreConfigError)
                  else "the blob store is unavailable; retry later")
        return problem_response(request, 503, detail, kind="blob-store-unavailable",
                                headers={"Retry-After": "5"})
    if _is_database_outage(exc):
        logger.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                       exc.__class__.__name__)
        return problem_response(request, 503, "the database is unavailable; retry later",
                                kind="database-unavailable", headers={"Retry-After": "5"})
    mapped = _core_error_status(exc)
    if mapped is not None and mapped[1] in _SERVER_SIDE_DETAILS:
        status, kind = mapped
        logger.warning("%s on %s %s: %s", kind, request.method, request.url.path, exc)
        return problem_response(request, status, _SERVER_SIDE_DETAILS[kind], kind=kind)
    if mapped is not None:
        status, kind = mapped
        extra: dict[str, Any] = {}
        field = getattr(exc, "field", None)
        if isinstance(field, str):
            extra["field"] = field
        return problem_response(request, status, str(exc), kind=kind, **extra)
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(request, 500, "internal error; it has been logged", kind="internal")


def install(app: FastAPI) -> None:
    """Register ``handle_error`` for every exception class the API can raise."""
    from sqlalchemy import exc as sa_exc

    from service.blobs import BlobStoreError
    from service.quotas import QuotaExceeded

    # Specific classes are handled by Starlette's ExceptionMiddleware; only ``Exception`` goes to
    # ServerErrorMiddleware, which re-raises after answering (and so breaks the connection).
    classes: list[type[BaseException]] = [
        ProblemError, RequestValidationError, StarletteHTTPException, QuotaExceeded, BlobStoreError,
        sa_exc.DBAPIError, sa_exc.TimeoutError,
    ]
    try:
        from mmlop_core.errors import MMLoPError

        classes.append(MMLoPError)
    except ImportError:  # pragma: no cover - core not installed
        pass
    for cls in (*classes, Exception):
        app.add_exception_handler(cls, handle_error)
