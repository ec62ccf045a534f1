"""Logging for the API and the worker: one line format, request id and job id on every line.

``configure_logging`` installs one handler on the root logger (stderr) and routes uvicorn's and
Celery's loggers through it, so both processes write the same lines:

- ``text`` (development): ``2024-05-01 12:00:00,123 INFO [MainProcess] worker.tasks
  request_id=- job_id=3f2a...: job 3f2a... attempt 1 succeeded ...``;
- ``json`` (production, ``MMLOP_LOG_FORMAT=json``): one JSON object per line with ``time``,
  ``level``, ``logger``, ``process``, ``message``, ``request_id``, ``job_id`` and ``exc_info``.

The ids come from context variables: the API's request-id middleware sets ``request_id``
(``X-Request-ID``), the training task sets ``job_id`` (:func:`job_context`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone

request_id_var: ContextVar[str | None] = ContextVar("mmlop_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("mmlop_job_id", default=None)

TEXT_FORMAT = ("%(asctime)s %(levelname)s [%(processName)s] %(name)s "
               "request_id=%(request_id)s job_id=%(job_id)s: %(message)s")
# Loggers that install handlers of their own; they are routed through the root handler instead.
_FOREIGN = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task",
            "celery.redirected")


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``job_id`` (``-`` when unset) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the ids of the current context; never drops a record."""
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        if not hasattr(record, "job_id"):
            record.job_id = job_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (UTC ISO-8601 time; the traceback as ``exc_info`` text)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single JSON line."""
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "job_id": getattr(record, "job_id", "-"),
        }
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _SkipTaskSucceeded(logging.Filter):
    """Drops Celery's "Task ... succeeded in ...: <return value>" line.

    The training task logs what happened to the job itself (succeeded, canceled, failed, left to
    a live attempt); Celery's line would call a canceled job's task "succeeded".
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the task-succeeded record of ``celery.app.trace``."""
        return not (isinstance(record.msg, str) and " succeeded in " in record.msg)


def make_handler(fmt: str) -> logging.Handler:
    """A stderr handler writing ``fmt`` ("text" or "json") with the context ids attached."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler._mmlop = True  # type: ignore[attr-defined] - marks the handler this module owns
    return handler


def configure_logging(fmt: str = "text", level: int | str = logging.INFO) -> None:
    """Install the service's one log format on the root logger (idempotent).

    Args:
        fmt: ``"text"`` or ``"json"`` (the ``MMLOP_LOG_FORMAT`` setting).
        level: root level, a number or a name such as ``"INFO"``.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mmlop", False) or isinstance(handler, logging.StreamHandler) and \
                getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
            root.removeHandler(handler)
    root.addHandler(make_handler(fmt))
    root.setLevel(level)
    for name in _FOREIGN:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    trace = logging.getLogger("celery.app.trace")
    if not any(isinstance(f, _SkipTaskSucceeded) for f in trace.filters):
        trace.addFilter(_SkipTaskSucceeded())


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every log line inside the ``with`` body carries ``job_id``."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)
