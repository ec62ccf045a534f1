"""Per-key management of one tenant (issue 11 item 7): list, issue, revoke, rotate with an
overlap, and the throttled ``last_used_at`` update made by authentication.

Used by the API (``/keys``, the calling key's tenant) and the operator's ``mmlop tenant keys`` /
``revoke-key``. Errors are ``ApiKeyError`` (a ``TenantError``) with a ``reason`` the API maps to
a status: ``not-found`` 404, ``current-key``/``last-key``/``key-inactive``/``too-many-keys``
409.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.models import ApiKey, as_utc, utcnow
from service.tenants import TenantError, key_is_active, new_key

logger = logging.getLogger(__name__)

# Rotation: how long the old key keeps working next to its successor (seconds).
DEFAULT_OVERLAP_S = 24 * 3600
MAX_OVERLAP_S = 7 * 24 * 3600
# Active keys a tenant may hold through the API (POST /keys, rotations): bounds the table.
MAX_ACTIVE_KEYS = 100
# last_used_at is written at most this often per key (seconds), not on every request.
TOUCH_INTERVAL_S = 60.0


class ApiKeyError(TenantError):
    """A key operation that cannot be done; ``reason`` says why (``not-found``,
    ``current-key``, ``last-key``, ``key-inactive``, ``too-many-keys``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def list_keys(session: Session, tenant_id: str) -> list[ApiKey]:
    """Every key of the tenant, revoked and expired ones included, oldest first."""
    return list(session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id)
                                .order_by(ApiKey.created_at, ApiKey.id)))


def get_key(session: Session, tenant_id: str, key_id: str) -> ApiKey:
    """The tenant's key ``key_id``; raises ``ApiKeyError`` (not-found) for another tenant's."""
    row = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id))
    if row is None:
        raise ApiKeyError(f"no API key {key_id!r}", "not-found")
    return row


def _check_room(session: Session, tenant_id: str, now: datetime) -> None:
    active = sum(key_is_active(k, now) for k in list_keys(session, tenant_id))
    if active >= MAX_ACTIVE_KEYS:
        raise ApiKeyError(f"the tenant has {active} active keys, the limit; revoke unused ones "
                          "first", "too-many-keys")


def create_key(session: Session, tenant_id: str, name: str | None = None,
               now: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key of the tenant: (row, plain key, shown once). Raises ``ApiKeyError``
    ``too-many-keys`` when the tenant already holds ``MAX_ACTIVE_KEYS`` active keys."""
    _check_room(session, tenant_id, now or utcnow())
    return new_key(session, tenant_id, name=name)


def _others_active(session: Session, row: ApiKey, now: datetime) -> bool:
    return any(key_is_active(k, now) for k in list_keys(session, row.tenant_id) if k.id != row.id)


def revoke_key(session: Session, tenant_id: str, key_id: str, *, current_id: str | None = None,
               allow_current: bool = False, now: datetime | None = None) -> ApiKey:
    """Revoke one key of the tenant (idempotent: an already revoked key is returned as is).

    Raises ``ApiKeyError``: ``not-found``; ``current-key`` when ``key_id`` is ``current_id``
    (the key making the request) and not ``allow_current``; ``last-key`` when no other active
    key would be left (revoke the whole tenant instead, or issue another key first).
    """
    now = now or utcnow()
    row = get_key(session, tenant_id, key_id)
    if row.revoked_at is not None:
        return row
    if row.id == current_id and not allow_current:
        raise ApiKeyError("this is the key making the request; pass allow_current=true to revoke "
                          "it", "current-key")
    if key_is_active(row, now) and not _others_active(session, row, now):
        raise ApiKeyError("this is the tenant's last active key; create another key first (or "
                          "have the operator revoke the whole tenant)", "last-key")
    row.revoked_at = now
    session.flush()
    return row


def rotate_key(session: Session, tenant_id: str, key_id: str, *,
               overlap_s: int = DEFAULT_OVERLAP_S, now: datetime | None = None,
               secret: str | None = None) -> tuple[ApiKey, str]:
    """Issue a successor of an active key (same name); the old key keeps working for
    ``overlap_s`` seconds (0..``MAX_OVERLAP_S``), then stops (its ``expires_at``; an earlier
    expiry is kept). Returns (new row, plain key, shown once).

    Raises ``ApiKeyError``: ``not-found``; ``key-inactive`` for a revoked or expired key;
    ``already-rotated`` for a key that already has an expiry (a successor was issued: rotating
    it again would mint one more active key per call, so rotate the successor instead);
    ``too-many-keys`` (see ``create_key``) when ``overlap_s`` > 0.
    ``ValueError`` for ``overlap_s`` out of bounds. ``secret`` overrides the settings' secret
    key (as in ``service.tenants.new_key``).
    """
    if not 0 <= overlap_s <= MAX_OVERLAP_S:
        raise ValueError(f"overlap_s must be 0..{MAX_OVERLAP_S}")
    now = now or utcnow()
    row = get_key(session, tenant_id, key_id)
    if not key_is_active(row, now):
        raise ApiKeyError(f"API key {key_id!r} is revoked or expired; create a new key instead",
                          "key-inactive")
    if row.expires_at is not None:
        raise ApiKeyError(f"API key {key_id!r} was already rotated and stops working at "
                          f"{as_utc(row.expires_at).isoformat()}; rotate its successor instead, "
                          "or revoke this key to end the overlap now", "already-rotated")
    if overlap_s:  # with no overlap the old key stops now: the count does not grow
        _check_room(session, tenant_id, now)
    ends = now + timedelta(seconds=overlap_s)
    row.expires_at = min(as_utc(row.expires_at), ends) if row.expires_at else ends
    return new_key(session, tenant_id, name=row.name, secret=secret)


def touch_key(session: Session, row: ApiKey, now: datetime | None = None,
              interval_s: float = TOUCH_INTERVAL_S) -> bool:
    """Set ``row.last_used_at`` to ``now`` and commit, unless it was set less than
    ``interval_s`` ago (the request path writes at most once a minute per key). Returns True
    when written. A database error is logged and swallowed: it must not fail the request.
    """
    now = now or utcnow()
    if row.last_used_at is not None and (now - as_utc(row.last_used_at)).total_seconds() < interval_s:
        return False
    try:
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        session.commit()
    except SQLAlchemyError:
        session.rollback()
        logger.warning("could not record the last use of API key %s", row.prefix, exc_info=True)
        return False
    return True
