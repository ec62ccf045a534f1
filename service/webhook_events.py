"""Webhook events: the one place a job's terminal state turns into an event.

Every code path that makes a job ``succeeded``, ``failed`` or ``canceled`` (the worker's result
and failure writes, its claim-time cancel and give-up, the reconciler's give-up, the API's
DELETE and cancel) calls :func:`job_ended` after its write committed. When the job has a
``callback_url`` it stores one ``WebhookEvent`` (at most one per job and event type: a unique
constraint, so two paths reporting the same end send one event) holding the exact JSON body,
and enqueues its first delivery attempt on the ``webhook_queue`` (``worker/webhooks.py``).
It never raises: a webhook problem must not undo or fail the job's own state change.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.exc import IntegrityError

from service.db import session_scope
from service.jobs import JobStatus
from service.models import Adaptation, WebhookEvent, as_utc, utcnow

logger = logging.getLogger(__name__)

WEBHOOK_TASK_NAME = "mmlop.deliver_webhook"
EVENT_TYPES = {s.value: f"adaptation.{s.value}" for s in
               (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)}
# The adaptation's members an event's ``data`` carries (a subset of AdaptationPublic).
DATA_FIELDS = ("id", "status", "error", "metrics", "class_names", "num_images", "attempt",
               "trainable_parameters", "checkpoint_bytes", "created_at", "started_at",
               "finished_at")


def _iso(value: datetime) -> str:
    return as_utc(value).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def event_body(job: Adaptation, event_type: str, now: datetime) -> str:
    """The event's JSON text: ``{"type", "timestamp", "data": {DATA_FIELDS of the job}}``
    (times ISO 8601 UTC with ``Z``)."""
    data: dict[str, Any] = {}
    for name in DATA_FIELDS:
        value = getattr(job, name)
        data[name] = _iso(value) if isinstance(value, datetime) else value
    return json.dumps({"type": event_type, "timestamp": _iso(now), "data": data},
                      separators=(",", ":"), ensure_ascii=False)


def job_ended(job_id: str) -> str | None:
    """Record and enqueue the terminal event of job ``job_id``; returns the event id, or None
    when there is nothing to send (no ``callback_url``, not terminal, already sent) or it
    failed (logged; ``POST .../deliveries/{event_id}/redeliver`` can send a stored one later).
    """
    try:
        with session_scope() as session:
            job = session.get(Adaptation, job_id)
            if job is None or not job.callback_url or job.status not in EVENT_TYPES:
                return None
            event_type, now = EVENT_TYPES[job.status], utcnow()
            event = WebhookEvent(id=f"msg_{uuid.uuid4().hex}", tenant_id=job.tenant_id,
                                 adaptation_id=job.id, type=event_type,
                                 payload=event_body(job, event_type, now), created_at=now)
            session.add(event)
            event_id = event.id
    except IntegrityError:
        logger.info("job %s: its event was already recorded; not sent twice", job_id)
        return None
    except Exception:  # noqa: BLE001 - never fail the job's own state change
        logger.exception("job %s: could not record its webhook event", job_id)
        return None
    return event_id if send_attempt(event_id, 1) else None


def send_attempt(event_id: str, attempt: int, countdown: float = 0.0) -> bool:
    """Enqueue delivery attempt ``attempt`` of ``event_id`` (after ``countdown`` seconds);
    False (logged) when the broker refused it."""
    from service.queue import enqueue_webhook

    try:
        enqueue_webhook(event_id, attempt, countdown)
        return True
    except Exception:  # noqa: BLE001 - broker down: the event stays stored, redeliverable
        logger.exception("could not enqueue webhook event %s attempt %d", event_id, attempt)
        return False
