"""Webhook delivery: the Celery task ``mmlop.deliver_webhook`` (one attempt per message).

An attempt re-reads the event and its adaptation's ``callback_url``, checks the URL again
against the SSRF rule (``service/webhook_urls.py``) and POSTs the stored body to the address
it checked (the host stays in ``Host`` and TLS SNI, the certificate is verified for the host),
signed per Standard Webhooks with the tenant's active secrets. No redirects are followed, no
proxy from the environment is used, and the answer is read for at most ``webhook_timeout_s``
and ``_MAX_BODY`` bytes. A 2xx answer delivers; anything else is recorded and attempt n + 1 is
enqueued with a countdown of ``webhook_backoff_s * 2**(n-1)`` (capped at
``webhook_backoff_max_s``), half of it fixed and half random ("equal jitter"), until
``webhook_max_attempts``. Every attempt is one ``WebhookAttempt`` row.

These tasks go to ``webhook_queue``, consumed by the light webhook worker
(``celery ... worker -Q <webhook_queue> --pool threads``), never by a training worker, so a long
training does not hold them up.
"""

from __future__ import annotations

import logging
import random
import time

import httpx

from service.db import session_scope
from service.models import Adaptation, WebhookAttempt, WebhookEvent, utcnow
from service.settings import Settings, get_settings
from service.webhook_events import WEBHOOK_TASK_NAME, send_attempt
from service.webhook_secrets import get_or_create, signature_headers
from service.webhook_urls import CallbackURLError, check_callback_url
from worker.celery_app import app

logger = logging.getLogger(__name__)

_MAX_BODY = 4096  # bytes of the receiver's answer read (for the error text), at most
USER_AGENT = "mmlop-webhooks/0.1"


def backoff_s(attempt: int, settings: Settings) -> float:
    """Seconds before attempt ``attempt + 1``: ``d = min(webhook_backoff_s * 2**(attempt-1),
    webhook_backoff_max_s)``, then ``d/2 + uniform(0, d/2)``."""
    delay = min(settings.webhook_backoff_s * 2 ** (attempt - 1), settings.webhook_backoff_max_s)
    return delay / 2 + random.uniform(0, delay / 2)


def post(url: str, msg_id: str, body: str, active: list[str],
         settings: Settings) -> tuple[int | None, str | None]:
    """POST ``body`` to ``url`` once; (HTTP status, None) on a 2xx answer, else (status or
    None, error text)."""
    try:
        target = check_callback_url(url, settings)
    except CallbackURLError as exc:
        return None, f"refused: {exc}"
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "Host": target.host_header(),
               **signature_headers(active, msg_id, int(time.time()), body)}
    deadline = time.monotonic() + settings.webhook_timeout_s
    try:
        with httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False,
                          trust_env=False) as client, \
                client.stream("POST", target.pinned_url(), content=body.encode(),
                              headers=headers, extensions={"sni_hostname": target.host}) as resp:
            answer = b""
            for chunk in resp.iter_raw():
                answer += chunk
                if len(answer) >= _MAX_BODY or time.monotonic() > deadline:
                    break
            if 200 <= resp.status_code < 300:
                return resp.status_code, None
            text = answer[:200].decode("utf-8", "replace").strip()
            return resp.status_code, f"HTTP {resp.status_code}" + (f": {text}" if text else "")
    except httpx.TimeoutException:
        return None, f"timed out after {settings.webhook_timeout_s:g} s"
    except httpx.HTTPError as exc:
        return None, f"{exc.__class__.__name__}: {exc}"[:500]


def deliver(event_id: str, attempt: int) -> str:
    """Run delivery attempt ``attempt`` of ``event_id``; returns ``delivered``, ``retrying``,
    ``gave up`` or ``gone`` (the event or its adaptation no longer exists)."""
    settings = get_settings()
    with session_scope() as session:
        event = session.get(WebhookEvent, event_id)
        job = session.get(Adaptation, event.adaptation_id) if event is not None else None
        if event is None or job is None or not job.callback_url:
            logger.info("webhook event %s: nothing to deliver any more", event_id)
            return "gone"
        url, body, tenant_id = job.callback_url, event.payload, event.tenant_id
        active = get_or_create(session, tenant_id).active()
    started, at = time.monotonic(), utcnow()
    status, error = post(url, event_id, body, active, settings)
    duration_ms = (time.monotonic() - started) * 1000
    retry = None if error is None or attempt >= settings.webhook_max_attempts \
        else backoff_s(attempt, settings)
    with session_scope() as session:
        session.add(WebhookAttempt(event_id=event_id, attempt=attempt, attempted_at=at,
                                   status_code=status, error=error, duration_ms=duration_ms,
                                   next_retry_s=retry))
    if error is None:
        logger.info("webhook event %s delivered (attempt %d, HTTP %s, %.0f ms)", event_id,
                    attempt, status, duration_ms)
        return "delivered"
    if retry is None:
        logger.warning("webhook event %s attempt %d failed (%s); gave up", event_id, attempt,
                       error)
        return "gave up"
    logger.info("webhook event %s attempt %d failed (%s); next in %.1f s", event_id, attempt,
                error, retry)
    send_attempt(event_id, attempt + 1, retry)
    return "retrying"


@app.task(name=WEBHOOK_TASK_NAME, acks_late=True, ignore_result=True)
def deliver_webhook(event_id: str, attempt: int) -> str:
    """Celery task ``mmlop.deliver_webhook``: one delivery attempt (see :func:`deliver`)."""
    return deliver(event_id, attempt)
