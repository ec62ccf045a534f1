"""Tenants and their API keys: creation, revocation, authentication.

A key is ``mmlop_<43 url-safe chars>`` (256 random bits). Only ``HMAC-SHA256(secret_key, key)``
is stored; lookups go by that hash and the match is re-checked with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import ApiKey, Tenant, as_utc, utcnow
from service.settings import get_settings

KEY_PREFIX = "mmlop_"


class TenantError(Exception):
    """A tenant operation that cannot be done (duplicate name, unknown tenant)."""


def hash_key(key: str, secret: str | None = None) -> str:
    """Keyed hash (HMAC-SHA256, hex) of an API key."""
    secret = secret if secret is not None else get_settings().secret_key
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def new_key(session: Session, tenant_id: str, *, name: str | None = None,
            secret: str | None = None) -> tuple[ApiKey, str]:
    """Store a new API key of ``tenant_id`` (only its keyed hash); returns (row, plain key).

    The plain key is shown once and never stored. ``secret`` overrides the settings' secret key
    (tools that serve another deployment).
    """
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(tenant_id=tenant_id, key_hash=hash_key(key, secret), prefix=key[:12], name=name,
                 created_at=utcnow())
    session.add(row)
    session.flush()
    return row, key


def issue_key(session: Session, tenant: Tenant, secret: str | None = None) -> str:
    """Create a new API key for ``tenant``; returns the plain key (shown once, never stored)."""
    return new_key(session, tenant.id, secret=secret)[1]


def create_tenant(session: Session, name: str, secret: str | None = None) -> tuple[Tenant, str]:
    """Create tenant ``name`` with one API key; returns (tenant, plain key).

    Raises ``TenantError`` if the name is taken or empty.
    """
    name = name.strip()
    if not name:
        raise TenantError("tenant name must not be empty")
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise TenantError(f"tenant {name!r} already exists")
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant, issue_key(session, tenant, secret)


def find_tenant(session: Session, name_or_id: str) -> Tenant:
    """The tenant with that name or id; raises ``TenantError``."""
    tenant = session.scalar(
        select(Tenant).where((Tenant.name == name_or_id) | (Tenant.id == name_or_id))
    )
    if tenant is None:
        raise TenantError(f"no tenant named {name_or_id!r}")
    return tenant


def revoke_tenant(session: Session, name_or_id: str) -> int:
    """Revoke a tenant and all its keys; returns the number of keys revoked."""
    tenant = find_tenant(session, name_or_id)
    now = utcnow()
    tenant.revoked_at = tenant.revoked_at or now
    keys = session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == tenant.id, ApiKey.revoked_at.is_(None))
    ).all()
    for key in keys:
        key.revoked_at = now
    session.flush()
    return len(keys)


def key_is_active(row: ApiKey, now: datetime | None = None) -> bool:
    """True unless the key is revoked or past its ``expires_at``."""
    now = now or utcnow()
    return row.revoked_at is None and (row.expires_at is None or as_utc(row.expires_at) > now)


def authenticate_key(session: Session, key: str, secret: str | None = None,
                     now: datetime | None = None) -> tuple[ApiKey, Tenant] | None:
    """(key row, active tenant) of ``key``; None for an unknown, revoked, expired (its
    ``expires_at`` is past ``now``) or malformed key, or one of a revoked tenant."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    digest = hash_key(key, secret)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None or not hmac.compare_digest(row.key_hash, digest) or not key_is_active(row, now):
        return None
    tenant = session.get(Tenant, row.tenant_id)
    if tenant is None or tenant.revoked_at is not None:
        return None
    return row, tenant


def authenticate(session: Session, key: str, secret: str | None = None) -> Tenant | None:
    """The active tenant owning ``key``, or None (see :func:`authenticate_key`)."""
    found = authenticate_key(session, key, secret)
    return found[1] if found else None
