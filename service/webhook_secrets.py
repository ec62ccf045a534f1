"""Per-tenant webhook signing secrets and Standard Webhooks signatures.

A secret is ``whsec_`` + base64 of 32 random bytes; the signature of a delivery is
``v1,`` + base64(HMAC-SHA256(secret bytes, "{webhook-id}.{webhook-timestamp}.{body}")).
A tenant's secret is created on first use (its first read, or its first delivery). A rotation
keeps the replaced secret for ``webhook_secret_overlap_s`` seconds, and deliveries meanwhile
carry both signatures, space-separated, so receivers can switch secrets without a gap. A second
rotation while that overlap runs is refused (:class:`RotationInProgress`): it would end the
promised overlap of the first secret at once, and receivers still on it would fail.

Secrets are stored encrypted (Fernet: AES-128-CBC + HMAC-SHA256) under a key derived from
``secret_key`` with HKDF-SHA256, so a database dump alone does not reveal them; changing
``secret_key`` makes them unreadable (as it invalidates API keys): such a tenant gets a new
secret on its next read or delivery. Secrets are never logged.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import WebhookSecret, as_utc, utcnow
from service.settings import get_settings

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


@functools.lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"mmlop webhook signing secrets").derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _encrypt(secret: str) -> str:
    return _fernet(get_settings().secret_key).encrypt(secret.encode()).decode()


def _decrypt(token: str) -> str | None:
    try:
        return _fernet(get_settings().secret_key).decrypt(token.encode()).decode()
    except InvalidToken:
        return None  # encrypted under another secret_key


class RotationInProgress(Exception):
    """The tenant's previous secret still signs (until ``ends_at``): a rotation now would drop it
    before the end of the overlap its rotation promised."""

    def __init__(self, ends_at: datetime) -> None:
        super().__init__(f"the previous webhook secret keeps signing until {ends_at.isoformat()}; "
                         "rotate again after that")
        self.ends_at = ends_at


def new_secret() -> str:
    """A fresh ``whsec_<base64 of 32 random bytes>`` secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@dataclass(frozen=True)
class SigningSecrets:
    """A tenant's current secret and, during a rotation's overlap, the previous one."""

    current: str
    created_at: datetime
    previous: str | None = None
    previous_expires_at: datetime | None = None

    def active(self, now: datetime | None = None) -> list[str]:
        """The secrets that sign a delivery at ``now``: the current one, then the previous one
        while its overlap lasts."""
        now = now or utcnow()
        keep = self.previous and self.previous_expires_at and \
            as_utc(self.previous_expires_at) > now
        return [self.current] + ([self.previous] if keep else [])


def _read(row: WebhookSecret) -> SigningSecrets | None:
    current = _decrypt(row.secret)
    if current is None:
        return None
    previous = _decrypt(row.previous_secret) if row.previous_secret else None
    return SigningSecrets(current, as_utc(row.created_at), previous,
                          as_utc(row.previous_expires_at) if previous and
                          row.previous_expires_at else None)


def get_or_create(session: Session, tenant_id: str) -> SigningSecrets:
    """The tenant's secrets, creating the secret on first use (commits).

    A row that cannot be decrypted (``secret_key`` changed) is replaced by a new secret. Two
    concurrent first uses agree: the loser of the insert re-reads the winner's row.
    """
    row = session.get(WebhookSecret, tenant_id)
    if row is not None:
        found = _read(row)
        if found is not None:
            return found
        return rotate(session, tenant_id, overlap_s=0)
    row = WebhookSecret(tenant_id=tenant_id, secret=_encrypt(new_secret()), created_at=utcnow())
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        row = session.get(WebhookSecret, tenant_id)
    return _read(row)


def rotate(session: Session, tenant_id: str, overlap_s: float | None = None) -> SigningSecrets:
    """Replace the tenant's secret with a new one (commits); the old one keeps signing for
    ``overlap_s`` seconds (default ``webhook_secret_overlap_s``; 0 ends it now).

    Raises:
        RotationInProgress: ``overlap_s`` > 0 while the previous rotation's overlap still runs
            (nothing changed).
    """
    overlap_s = get_settings().webhook_secret_overlap_s if overlap_s is None else overlap_s
    now = utcnow()
    row = session.get(WebhookSecret, tenant_id, with_for_update=True)
    if row is None:
        session.add(WebhookSecret(tenant_id=tenant_id, secret=_encrypt(new_secret()),
                                  created_at=now))
        session.commit()
        return _read(session.get(WebhookSecret, tenant_id))
    ends = as_utc(row.previous_expires_at) if row.previous_expires_at else None
    if overlap_s > 0 and row.previous_secret and ends is not None and ends > now:
        session.rollback()  # releases the row lock
        raise RotationInProgress(ends)
    old = _decrypt(row.secret)
    row.previous_secret = _encrypt(old) if old and overlap_s > 0 else None
    row.previous_expires_at = now + timedelta(seconds=overlap_s) if old and overlap_s > 0 else None
    row.secret, row.created_at = _encrypt(new_secret()), now
    session.commit()
    return _read(row)


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """One Standard Webhooks signature, ``v1,<base64 HMAC-SHA256>``, of ``body`` (the exact
    text sent) under ``secret`` (``whsec_<base64>``)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_headers(active: list[str], msg_id: str, timestamp: int,
                      body: str) -> dict[str, str]:
    """The three Standard Webhooks headers: ``webhook-id``, ``webhook-timestamp`` (Unix
    seconds) and ``webhook-signature`` (one signature per active secret, space-separated)."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in active)}
