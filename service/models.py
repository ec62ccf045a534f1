"""SQLAlchemy 2 models. Tables are created only by Alembic migrations (``migrations/``)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.jobs import JobStatus


def utcnow() -> datetime:
    """Timezone-aware current UTC time."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC time (SQLite returns naive datetimes; every stored time is UTC)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def new_id() -> str:
    """A new random identifier (UUID4, hex with dashes)."""
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    """Declarative base of all service tables."""


class Tenant(Base):
    """A customer; every adaptation and key belongs to exactly one tenant."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    """An API key, stored only as its keyed hash (HMAC-SHA256 with the secret key)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to recognise a key
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    name: Mapped[str | None] = mapped_column(String(200))  # the owner's label ("ci", "laptop")
    # Refreshed at most once a minute per key (service/api_keys.py touch_key).
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The key stops working then (set by a rotation's overlap); None: no expiry.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Adaptation(Base):
    """One training job and, once it succeeded, the adapter it produced."""

    __tablename__ = "adaptations"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key", name="uq_adaptations_idem"),
                      Index("ix_adaptations_tenant_name", "tenant_id", "name"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value, index=True)
    # Client-chosen de-duplication key and the hash of the request it came with.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    class_names: Mapped[list[str]] = mapped_column(JSON)
    # Training set: list of [blob key, label index].
    images: Mapped[list[list[Any]]] = mapped_column(JSON)
    num_images: Mapped[int] = mapped_column(Integer)
    adapter_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    train_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Latest progress: epoch, epochs, step, steps, loss, eta_s.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    trainable_parameters: Mapped[int | None] = mapped_column(Integer)
    checkpoint_bytes: Mapped[int | None] = mapped_column(Integer)
    # Bytes of the uploads stored with the job (quota_max_stored_bytes counts it and
    # checkpoint_bytes from here, never from the blob store). None: a row from before 0002.
    upload_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Where the job's terminal event is POSTed (migration 0004; docs/SERVICE.md "Webhooks").
    callback_url: Mapped[str | None] = mapped_column(Text)
    backbone: Mapped[str] = mapped_column(String(200))
    pretrained: Mapped[str] = mapped_column(String(500))
    # Fencing token: incremented by each delivery that claims the job; only the holder of the
    # latest attempt may write progress or a result.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))  # "host:pid" of the latest attempt
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The owner's label and small JSON object of string values (migration 0003; limits in
    # api/adaptation_fields.py). ``metadata`` is SQLAlchemy's own attribute, hence the name.
    name: Mapped[str | None] = mapped_column(String(100))
    user_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON)


class WebhookSecret(Base):
    """A tenant's webhook signing secret (``whsec_<base64>``), and the one it replaced, which
    keeps signing until ``previous_expires_at``. Both are stored Fernet-encrypted under a key
    derived from ``secret_key`` (service/webhook_secrets.py), never in clear."""

    __tablename__ = "webhook_secrets"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           primary_key=True)
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookEvent(Base):
    """One event of an adaptation (``adaptation.succeeded|failed|canceled``): its id (the
    ``webhook-id`` header, the same on every attempt) and the exact JSON body sent."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("adaptation_id", "type", name="uq_webhook_events_type"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    adaptation_id: Mapped[str] = mapped_column(ForeignKey("adaptations.id", ondelete="CASCADE"),
                                               index=True)
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookAttempt(Base):
    """One delivery attempt of an event: when, HTTP status or error text, duration."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"),
                                          index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)
    # Seconds until the next attempt (None: delivered, or given up).
    next_retry_s: Mapped[float | None] = mapped_column(Float)
