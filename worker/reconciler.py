"""Periodic reconciler: the database is the source of truth, the broker and blob store follow.

One pass (``reconcile_once``):
1. a job ``queued`` in the database for longer than ``reconcile_grace_s`` whose message is in
   neither the broker's queue nor its unacked set (Redis restarted without persistence, a lost
   publish) is sent again;
2. a job ``running`` whose heartbeat is older than ``job_heartbeat_timeout_s`` (its worker died
   on another host, or hangs) is put back to ``queued`` and sent again, or marked ``failed``
   with the reason once it has had ``job_max_attempts`` deliveries; a zombie attempt is fenced
   out by the ``attempt`` compare-and-set;
3. a blob folder ``tenants/<t>/adaptations/<id>`` without a live database row (an API process
   killed between storing uploads and inserting the row, or between deleting the row and its
   files) are removed, and temp files (filesystem) or multipart uploads (S3) under the
   service's own ``tenants/`` folder that this process has seen for ``blob_temp_max_age_s``
   (its own monotonic clock, remembered across passes in ``_TEMP_SEEN``; never the store's
   dates; a restarted worker learns them again). An S3 lifecycle rule
   ``AbortIncompleteMultipartUpload`` is the long-stop for uploads no worker lives to see.

Every worker's main process runs passes every ``reconcile_interval_s`` in a daemon thread
(``start_background``, wired to Celery's ``worker_ready``); on PostgreSQL an advisory lock lets
one pass run at a time across workers. A duplicate message is harmless: a finished job ignores
deliveries, and a queued one is claimed once. ``python -m worker.reconciler`` runs one pass.
"""

from __future__ import annotations

import json
import sys
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update

from service.blobs import BlobStore, get_blob_store
from service.db import get_engine, session_scope
from service.jobs import JobStatus
from service.models import Adaptation, utcnow
from service.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x6D6D6C6F  # "mmlo": advisory lock id of the reconciler
# {temp entry id: time.monotonic() when this process first saw it} (``service.blobs.due_temp``)
_TEMP_SEEN: dict[str, float] = {}


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def broker_messages(settings: Settings) -> bytes | None:
    """Raw bytes of every message waiting in or taken from the training queue.

    None when the broker cannot be read (then nothing is re-sent this pass).
    """
    try:
        if settings.broker_is_filesystem:
            from service.queue import celery_config

            folder = Path(celery_config(settings)["broker_transport_options"]["data_folder_in"])
            return b"\n".join(p.read_bytes() for p in folder.iterdir()
                              if p.name.endswith(f".{settings.task_queue}.msg"))
        import redis

        client = redis.Redis.from_url(settings.broker_url, socket_timeout=5,
                                      socket_connect_timeout=5)
        try:
            queue = settings.task_queue
            keys = [queue.encode()] + list(client.keys(f"{queue}\x06\x16*"))
            chunks = [b"\n".join(client.lrange(k, 0, -1)) for k in keys]
            chunks.extend(client.hvals("unacked"))
            return b"\n".join(chunks)
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - broker down: try again next pass
        logger.warning("reconciler: cannot read the broker", exc_info=True)
        return None


def requeue_missing(settings: Settings, now: datetime) -> list[str]:
    """Re-send queued jobs older than the grace period that the broker does not hold."""
    from service.queue import enqueue_training

    cutoff = now - timedelta(seconds=settings.reconcile_grace_s)
    with session_scope() as session:
        rows = session.execute(select(Adaptation.id, Adaptation.created_at).where(
            Adaptation.status == JobStatus.queued.value, Adaptation.deleted_at.is_(None))).all()
    candidates = [job_id for job_id, created in rows if _aware(created) <= cutoff]
    if not candidates:
        return []
    held = broker_messages(settings)
    if held is None:
        return []
    sent = []
    for job_id in candidates:
        if job_id.encode() in held:
            continue
        logger.warning("reconciler: job %s is queued but not in the broker; re-enqueuing", job_id)
        try:
            enqueue_training(job_id)
        except Exception:  # noqa: BLE001
            logger.warning("reconciler: re-enqueue of %s failed; next pass retries", job_id,
                           exc_info=True)
            continue
        sent.append(job_id)
    return sent


def recover_stale_running(settings: Settings, now: datetime) -> list[str]:
    """Re-queue (or fail, past the attempt limit) running jobs whose heartbeat is too old."""
    from service.queue import enqueue_training

    cutoff = now - timedelta(seconds=settings.job_heartbeat_timeout_s)
    with session_scope() as session:
        rows = session.execute(select(
            Adaptation.id, Adaptation.attempt, Adaptation.heartbeat_at, Adaptation.started_at,
        ).where(Adaptation.status == JobStatus.running.value,
                Adaptation.deleted_at.is_(None))).all()
    requeued = []
    for job_id, attempt, heartbeat, started in rows:
        last = _aware(heartbeat) or _aware(started)
        if last is None or last > cutoff:
            continue
        # Compare-and-set on the heartbeat read above too: an owner that beat meanwhile is alive.
        beat = (Adaptation.heartbeat_at.is_(None) if heartbeat is None
                else Adaptation.heartbeat_at == heartbeat)
        fence = update(Adaptation).where(Adaptation.id == job_id, Adaptation.attempt == attempt,
                                         Adaptation.status == JobStatus.running.value, beat)
        if attempt >= settings.job_max_attempts:
            _give_up(fence, job_id, attempt, settings)
            continue
        with session_scope() as session:
            changed = session.execute(fence.values(status=JobStatus.queued.value, worker=None)
                                      ).rowcount
        if changed:
            logger.warning("reconciler: job %s had no heartbeat since %s (attempt %d); "
                           "re-enqueuing", job_id, last.isoformat(), attempt)
            try:
                enqueue_training(job_id)
            except Exception:  # noqa: BLE001 - step 1 re-sends it next pass
                logger.warning("reconciler: re-enqueue of %s failed", job_id, exc_info=True)
            requeued.append(job_id)
    return requeued


def _give_up(fence: Any, job_id: str, attempt: int, settings: Settings) -> None:
    """Fail a job whose worker was lost ``job_max_attempts`` times (``fence``: its
    compare-and-set update), then emit its webhook event if the write won."""
    from service.webhook_events import job_ended

    with session_scope() as session:
        failed = session.execute(fence.values(
            status=JobStatus.failed.value, finished_at=utcnow(),
            error=f"worker lost: no heartbeat for {settings.job_heartbeat_timeout_s:.0f} s "
                  f"after {attempt} attempts")).rowcount
    if failed:
        logger.error("reconciler: job %s failed (worker lost, %d attempts)", job_id, attempt)
        job_ended(job_id)


def _job_folders(blobs: BlobStore) -> dict[tuple[str, str], float]:
    """{(tenant id, job id): newest blob mtime} of every ``tenants/<t>/adaptations/<id>``."""
    folders: dict[tuple[str, str], float] = {}
    for blob in blobs.list("tenants"):
        parts = blob.key.split("/")
        if len(parts) > 4 and parts[2] == "adaptations":
            ident = (parts[1], parts[3])
            folders[ident] = max(folders.get(ident, 0.0), blob.mtime)
    return folders


def sweep_orphans(settings: Settings, blobs: BlobStore, now: float | None = None,
                  seen: dict[str, float] | None = None) -> list[str]:
    """Remove job folders without a live row, and temp files (filesystem) or multipart uploads
    (S3) first seen ``blob_temp_max_age_s`` ago by this process (``seen``: that memory,
    default ``_TEMP_SEEN``); returns removed keys. ``now``: Unix seconds, for folder ages."""
    now = time.time() if now is None else now
    grace = settings.reconcile_grace_s
    removed: list[str] = []
    folders = _job_folders(blobs)
    if folders:
        with session_scope() as session:
            live = {(t, i) for i, t in session.execute(select(Adaptation.id, Adaptation.tenant_id)
                                                       .where(Adaptation.deleted_at.is_(None)))}
        for (tenant_id, job_id), mtime in folders.items():
            if (tenant_id, job_id) in live or now - mtime < grace:
                continue  # live, or an upload still being stored: its row comes after the files
            key = f"tenants/{tenant_id}/adaptations/{job_id}"
            logger.warning("reconciler: removing %s (no live job row)", key)
            blobs.delete_prefix(key)
            removed.append(key)
    return removed + blobs.sweep_temp(_TEMP_SEEN if seen is None else seen, time.monotonic(),
                                      settings.blob_temp_max_age_s)


def reconcile_once(settings: Settings | None = None) -> dict[str, Any]:
    """One reconciler pass; returns what it did (``requeued``, ``recovered``, ``removed``)."""
    settings = settings or get_settings()
    engine = get_engine()
    locked = None
    if engine.dialect.name == "postgresql":
        locked = engine.connect()
        if not locked.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}).scalar():
            locked.close()
            return {"skipped": "another reconciler holds the lock"}
    try:
        now = utcnow()
        return {"requeued": requeue_missing(settings, now),
                "recovered": recover_stale_running(settings, now),
                "removed": sweep_orphans(settings, get_blob_store())}
    finally:
        if locked is not None:
            try:
                locked.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                locked.commit()
            finally:
                locked.close()


def _loop(interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            result = reconcile_once()
            if any(result.get(k) for k in ("requeued", "recovered", "removed")):
                logger.info("reconciler pass: %s", result)
        except Exception:  # noqa: BLE001 - database down: next pass
            logger.warning("reconciler pass failed", exc_info=True)


def start_background(settings: Settings | None = None) -> threading.Thread | None:
    """Start the periodic reconciler thread (None when ``reconcile_interval_s`` is 0)."""
    settings = settings or get_settings()
    if settings.reconcile_interval_s <= 0:
        return None
    thread = threading.Thread(target=_loop, args=(settings.reconcile_interval_s, threading.Event()),
                              name="mmlop-reconciler", daemon=True)
    thread.start()
    logger.info("reconciler: a pass every %.1f s", settings.reconcile_interval_s)
    return thread


if __name__ == "__main__":  # pragma: no cover - operator entry point
    from service.logs import configure_logging

    configure_logging(get_settings().log_format, get_settings().log_level)
    sys.stdout.write(json.dumps(reconcile_once()) + "\n")  # the operator command's output
