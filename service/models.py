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
    ForeignKey,
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
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key", name="uq_adaptations_idem"),)

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
