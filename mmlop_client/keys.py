"""API key management of the client's own tenant (``/keys``): typed results and the calls,
mixed into ``Client`` (``KeysMixin``) and ``AsyncClient`` (``AsyncKeysMixin``).

A retried ``create_key`` or ``rotate_key`` (after a transport error whose request the server
had already done) can leave one more key than asked: ``keys()`` shows it, ``revoke_key`` ends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .models import _known

_TIMES = ("created_at", "last_used_at", "expires_at", "revoked_at")


@dataclass(frozen=True)
class ApiKey:
    """One API key of the tenant (``ApiKeyPublic``): never the key itself. Times are UTC;
    ``last_used_at`` moves at most once a minute; ``expires_at`` ends a rotation's overlap;
    ``current`` marks the key this client authenticates with."""

    id: str
    prefix: str
    created_at: datetime
    active: bool
    name: str | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    current: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """From a decoded ``ApiKeyPublic`` body (``NewApiKey.from_dict``: ``ApiKeyCreated``)."""
        return cls(**_known(cls, data, _TIMES))


@dataclass(frozen=True)
class NewApiKey(ApiKey):
    """A key just created or rotated (``ApiKeyCreated``): ``key`` is shown only this once."""

    key: str = ""


def _rotate_body(overlap_s: int | None) -> dict[str, Any]:
    return {"json": {} if overlap_s is None else {"overlap_s": overlap_s}}


class KeysMixin:
    """``keys``, ``create_key``, ``revoke_key``, ``rotate_key`` of the blocking ``Client``."""

    def keys(self) -> list[ApiKey]:
        """Every key of the tenant (revoked and expired ones too), oldest first."""
        resp = self._request("GET", "/keys")  # type: ignore[attr-defined]
        return [ApiKey.from_dict(item) for item in resp.json()["items"]]

    def create_key(self, name: str | None = None) -> NewApiKey:
        """A new key (``.key``, shown once) with an optional ``name`` label."""
        return NewApiKey.from_dict(self._request("POST", "/keys", json={"name": name}).json())  # type: ignore[attr-defined]

    def revoke_key(self, key_id: str, allow_current: bool = False) -> None:
        """Revoke one key. Raises MMLoPAPIError 409 ``current-key`` for this client's own key
        unless ``allow_current``, 409 ``last-key`` for the tenant's last active key, 404."""
        self._request("DELETE", f"/keys/{key_id}",  # type: ignore[attr-defined]
                      params={"allow_current": "true"} if allow_current else None)

    def rotate_key(self, key_id: str, overlap_s: int | None = None) -> NewApiKey:
        """The key's successor (``.key``, shown once); the old key keeps working ``overlap_s``
        seconds (server default one day, at most seven), then gets 401. A key rotated before
        raises the API's 409 ``already-rotated``: rotate its successor."""
        return NewApiKey.from_dict(self._request("POST", f"/keys/{key_id}/rotate",  # type: ignore[attr-defined]
                                  **_rotate_body(overlap_s)).json())


class AsyncKeysMixin:
    """The same calls as coroutines, for ``AsyncClient``."""

    async def keys(self) -> list[ApiKey]:
        """See ``Client.keys``."""
        resp = await self._request("GET", "/keys")  # type: ignore[attr-defined]
        return [ApiKey.from_dict(item) for item in resp.json()["items"]]

    async def create_key(self, name: str | None = None) -> NewApiKey:
        """See ``Client.create_key``."""
        resp = await self._request("POST", "/keys", json={"name": name})  # type: ignore[attr-defined]
        return NewApiKey.from_dict(resp.json())

    async def revoke_key(self, key_id: str, allow_current: bool = False) -> None:
        """See ``Client.revoke_key``."""
        await self._request("DELETE", f"/keys/{key_id}",  # type: ignore[attr-defined]
                            params={"allow_current": "true"} if allow_current else None)

    async def rotate_key(self, key_id: str, overlap_s: int | None = None) -> NewApiKey:
        """See ``Client.rotate_key``."""
        resp = await self._request("POST", f"/keys/{key_id}/rotate",  # type: ignore[attr-defined]
                                   **_rotate_body(overlap_s))
        return NewApiKey.from_dict(resp.json())
