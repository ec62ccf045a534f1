"""Webhooks of the client's own tenant: the signing secret (read, rotate) and an adaptation's
delivery attempts (redeliver one event), mixed into ``Client`` (``WebhooksMixin``) and
``AsyncClient`` (``AsyncWebhooksMixin``). Verify deliveries with the ``standardwebhooks``
package: ``Webhook(client.webhook_secret().secret).verify(body, headers)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .models import _known


@dataclass(frozen=True)
class WebhookSecret:
    """The tenant's signing secret (``WebhookSecretPublic``, ``whsec_<base64>``); during a
    rotation's overlap the previous one also signs, until ``previous_expires_at`` (UTC)."""

    secret: str
    created_at: datetime
    previous_expires_at: datetime | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WebhookSecret":
        """From a decoded ``WebhookSecretPublic`` body."""
        return cls(**_known(cls, data, ("created_at", "previous_expires_at")))


@dataclass(frozen=True)
class DeliveryAttempt:
    """One delivery attempt of an adaptation's event (``DeliveryAttempt``): ``status_code`` is
    the receiver's answer, ``error`` why it failed (None: delivered), ``next_retry_s`` the wait
    before the next attempt (None: no more)."""

    event_id: str
    type: str
    attempt: int
    attempted_at: datetime
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    next_retry_s: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DeliveryAttempt":
        """From one item of a decoded ``GET /adaptations/{id}/deliveries`` body."""
        return cls(**_known(cls, data, ("attempted_at",)))


class WebhooksMixin:
    """``webhook_secret``, ``rotate_webhook_secret``, ``deliveries``, ``redeliver`` of ``Client``."""

    def webhook_secret(self) -> WebhookSecret:
        """The tenant's signing secret (created on first read)."""
        return WebhookSecret.from_dict(self._request("GET", "/webhooks/secret").json())  # type: ignore[attr-defined]

    def rotate_webhook_secret(self) -> WebhookSecret:
        """A new signing secret; the old one keeps signing until ``previous_expires_at``. During
        that overlap a second rotation raises the API's 409 ``rotation-in-progress``."""
        return WebhookSecret.from_dict(self._request("POST", "/webhooks/secret/rotate").json())  # type: ignore[attr-defined]

    def deliveries(self, adaptation_id: str) -> list[DeliveryAttempt]:
        """Every delivery attempt of the adaptation's events, oldest first."""
        resp = self._request("GET", f"/adaptations/{adaptation_id}/deliveries")  # type: ignore[attr-defined]
        return [DeliveryAttempt.from_dict(item) for item in resp.json()["items"]]

    def redeliver(self, adaptation_id: str, event_id: str) -> int:
        """Send the event once more now; returns the new attempt's number."""
        resp = self._request("POST", f"/adaptations/{adaptation_id}/deliveries/{event_id}/redeliver")  # type: ignore[attr-defined]
        return int(resp.json()["attempt"])


class AsyncWebhooksMixin:
    """The same calls as coroutines, for ``AsyncClient``."""

    async def webhook_secret(self) -> WebhookSecret:
        """See ``Client.webhook_secret``."""
        resp = await self._request("GET", "/webhooks/secret")  # type: ignore[attr-defined]
        return WebhookSecret.from_dict(resp.json())

    async def rotate_webhook_secret(self) -> WebhookSecret:
        """See ``Client.rotate_webhook_secret``."""
        resp = await self._request("POST", "/webhooks/secret/rotate")  # type: ignore[attr-defined]
        return WebhookSecret.from_dict(resp.json())

    async def deliveries(self, adaptation_id: str) -> list[DeliveryAttempt]:
        """See ``Client.deliveries``."""
        resp = await self._request("GET", f"/adaptations/{adaptation_id}/deliveries")  # type: ignore[attr-defined]
        return [DeliveryAttempt.from_dict(item) for item in resp.json()["items"]]

    async def redeliver(self, adaptation_id: str, event_id: str) -> int:
        """See ``Client.redeliver``."""
        resp = await self._request("POST", f"/adaptations/{adaptation_id}/deliveries/{event_id}/redeliver")  # type: ignore[attr-defined]
        return int(resp.json()["attempt"])
