"""Webhooks: the tenant's signing secret (read, rotate), an adaptation's delivery attempts, and
a manual redelivery (docs/SERVICE.md "Webhooks")."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from api.deps import SessionDep, TenantDep
from api.problem import ProblemError
from api.routes.adaptations import get_owned
from service.models import WebhookAttempt, WebhookEvent, as_utc
from service.webhook_events import send_attempt
from service.webhook_secrets import RotationInProgress, SigningSecrets, get_or_create, rotate

router = APIRouter(tags=["webhooks"])


class WebhookSecretPublic(BaseModel):
    """The tenant's current signing secret; during a rotation's overlap deliveries are also
    signed with the previous one until ``previous_expires_at``."""

    secret: str = Field(description="whsec_<base64>: verify deliveries with it")
    created_at: datetime
    previous_expires_at: datetime | None = None


class DeliveryAttempt(BaseModel):
    """One delivery attempt of an adaptation's event."""

    event_id: str = Field(description="the webhook-id header; the same on every attempt")
    type: str = Field(description="adaptation.succeeded | adaptation.failed | adaptation.canceled")
    attempt: int
    attempted_at: datetime
    status_code: int | None = Field(default=None, description="the receiver's HTTP status")
    error: str | None = Field(default=None, description="why the attempt failed; null: delivered")
    duration_ms: float
    next_retry_s: float | None = Field(default=None,
                                       description="seconds until the next attempt; null: none")


class DeliveryList(BaseModel):
    """Every delivery attempt of an adaptation's events, oldest first."""

    items: list[DeliveryAttempt]


class Redelivery(BaseModel):
    """A queued manual redelivery."""

    event_id: str
    attempt: int


def _public(found: SigningSecrets) -> WebhookSecretPublic:
    return WebhookSecretPublic(secret=found.current, created_at=found.created_at,
                               previous_expires_at=found.previous_expires_at)


@router.get("/webhooks/secret", response_model=WebhookSecretPublic,
            summary="The tenant's webhook signing secret (created on first read)")
def get_webhook_secret(session: SessionDep, tenant: TenantDep) -> WebhookSecretPublic:
    """The secret that signs this tenant's deliveries (``whsec_<base64>``)."""
    return _public(get_or_create(session, tenant.id))


@router.post("/webhooks/secret/rotate", response_model=WebhookSecretPublic,
             openapi_extra={"x-problems": {409: ["rotation-in-progress"]}},
             summary="Replace the webhook signing secret (the old one keeps signing a while)")
def rotate_webhook_secret(session: SessionDep, tenant: TenantDep) -> WebhookSecretPublic:
    """A new secret; deliveries carry signatures of both secrets until ``previous_expires_at``
    (``webhook_secret_overlap_s`` from now). While that overlap runs a second rotation is 409
    ``rotation-in-progress`` (its ``previous_expires_at`` says when to retry): it would stop the
    first secret signing before the time its rotation promised."""
    try:
        return _public(rotate(session, tenant.id))
    except RotationInProgress as exc:
        raise ProblemError(409, str(exc), kind="rotation-in-progress",
                           previous_expires_at=exc.ends_at.isoformat()) from exc


@router.get("/adaptations/{adaptation_id}/deliveries", response_model=DeliveryList,
            summary="Webhook delivery attempts of an adaptation")
def list_deliveries(adaptation_id: str, session: SessionDep, tenant: TenantDep) -> DeliveryList:
    """Every attempt to deliver this adaptation's events; 404 for other tenants' ids."""
    job = get_owned(session, tenant, adaptation_id)
    rows = session.execute(
        select(WebhookAttempt, WebhookEvent.type)
        .join(WebhookEvent, WebhookEvent.id == WebhookAttempt.event_id)
        .where(WebhookEvent.adaptation_id == job.id)
        .order_by(WebhookAttempt.attempted_at, WebhookAttempt.id)).all()
    return DeliveryList(items=[DeliveryAttempt(
        event_id=a.event_id, type=etype, attempt=a.attempt, attempted_at=as_utc(a.attempted_at),
        status_code=a.status_code, error=a.error, duration_ms=a.duration_ms,
        next_retry_s=a.next_retry_s) for a, etype in rows])


@router.post("/adaptations/{adaptation_id}/deliveries/{event_id}/redeliver", status_code=202,
             response_model=Redelivery, summary="Send an adaptation's event again")
def redeliver(adaptation_id: str, event_id: str, session: SessionDep,
              tenant: TenantDep) -> Redelivery:
    """Queue one more attempt of the event now (with its retries, numbered after the last
    attempt). 404 for other tenants' ids and unknown events; 503 when the queue is down."""
    job = get_owned(session, tenant, adaptation_id)
    event = session.scalar(select(WebhookEvent).where(WebhookEvent.id == event_id,
                                                      WebhookEvent.adaptation_id == job.id))
    if event is None:
        raise ProblemError(404, f"no event {event_id!r} of adaptation {adaptation_id!r}",
                           kind="not-found")
    last = session.scalar(select(func.max(WebhookAttempt.attempt))
                          .where(WebhookAttempt.event_id == event.id)) or 0
    if not send_attempt(event.id, last + 1):
        raise ProblemError(503, "the job queue is unavailable; retry later",
                           kind="queue-unavailable", headers={"Retry-After": "30"})
    return Redelivery(event_id=event.id, attempt=last + 1)
