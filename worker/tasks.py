"""Training task: take a job id, re-read the job from the DB, train with ``mmlop_core``, store.

``run_job`` reads as its steps: ``_claim`` the job, then under a ``JobHeartbeat``
(``worker/heartbeat.py``) ``_train`` (``_load_images`` + ``train_adapter``), ``_publish`` the
checkpoint, and record the end (``_stopped``, ``_fail``).

Delivery semantics (at least once, so the task is idempotent):
- a job already succeeded/failed/canceled/deleted is left alone;
- a job ``running`` in an attempt that is alive and heartbeating is left alone: any second
  delivery (a duplicate publish, the broker's redelivery after the visibility timeout, a
  reconciler re-send) does nothing. The heartbeat thread covers every phase of an attempt;
- otherwise the delivery claims the job by incrementing ``attempt`` (a fencing token) with a
  compare-and-set; an older attempt still running (a zombie whose heartbeat went stale, or
  whose process is gone) sees the mismatch at its next write and stops, and its result write
  is refused. A redelivery after the worker was SIGKILLed therefore retrains;
- ``job_max_seconds`` bounds the attempt once the backbone is loaded: image decoding and the
  text features count, and a budget spent before the first step fails the job saying so;
- the checkpoint is written into a temporary directory and moved into place with
  ``os.replace``, so exactly one checkpoint exists;
- after ``job_max_attempts`` claims the job is marked failed (poison-message guard).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select, update

from service.blobs import BlobNotFound, BlobStoreError, get_blob_store
from service.db import session_scope
from service.jobs import TERMINAL, TRAIN_TASK_NAME, JobStatus, checkpoint_prefix, job_prefix
from service.logs import job_context
from service.models import Adaptation, utcnow
from service.settings import get_settings
from service.webhook_events import job_ended
from worker.celery_app import app
from worker.heartbeat import JobHeartbeat, fence, heartbeat_interval_s

logger = logging.getLogger(__name__)

_backbone: Any = None
_backbone_lock = threading.Lock()


def get_backbone() -> Any:
    """The configured backbone, loaded once per worker process (after fork)."""
    global _backbone
    with _backbone_lock:
        if _backbone is None:
            from service.backbone import load_configured_backbone

            _backbone = load_configured_backbone(get_settings())
        return _backbone


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _owner_alive(worker: str | None) -> bool:
    """Whether the process recorded as the job's owner may still be running it.

    On this host the process is looked up (this very process does not count: it runs one task
    at a time, so it no longer runs the job); on another host only its heartbeat can tell.
    """
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return bool(worker)
    return int(pid) != os.getpid() and _pid_alive(int(pid))


def _claim(job_id: str) -> Adaptation | None:
    """Claim the job for this delivery (compare-and-set on ``attempt``); None if nothing to do.

    A job ``running`` in an attempt whose process is alive and whose heartbeat is younger than
    ``job_heartbeat_timeout_s`` is left untouched: this is a second delivery (a duplicate
    publish, the broker's redelivery after the visibility timeout, a reconciler re-send).
    """
    with session_scope() as session:
        job = session.scalar(select(Adaptation).where(Adaptation.id == job_id))
        if job is None:
            logger.warning("job %s does not exist; message dropped", job_id)
            return None
        now = utcnow()
        before = job.status
        claimable = _claimable(job, now)
        ended = job.status != before  # canceled before it ran, or given up: committed below
        if claimable:
            claimable = _claim_row(session, job, now)
    if ended:
        job_ended(job_id)
    if not claimable:
        return None
    with session_scope() as session:
        return session.get(Adaptation, job_id)


def _claim_row(session: Any, job: Adaptation, now: datetime) -> bool:
    """The compare-and-set that claims ``job`` for this delivery; False if another one won."""
    old = job.attempt
    heartbeat = (Adaptation.heartbeat_at.is_(None) if job.heartbeat_at is None
                 else Adaptation.heartbeat_at == job.heartbeat_at)
    claimed = session.execute(
        update(Adaptation)
        .where(Adaptation.id == job.id, Adaptation.attempt == old, heartbeat,
               Adaptation.status.in_([JobStatus.queued.value, JobStatus.running.value]))
        .values(attempt=old + 1, status=JobStatus.running.value, worker=_worker_id(),
                heartbeat_at=now, started_at=job.started_at or now, progress=None,
                error=None)
    ).rowcount
    if claimed != 1:
        logger.info("job %s was claimed or touched concurrently; this delivery does nothing",
                    job.id)
    return claimed == 1


def _claimable(job: Adaptation, now: datetime) -> bool:
    """Whether this delivery may claim ``job``; else log why not (marking it canceled or failed
    when that is what the row says)."""
    settings = get_settings()
    if job.deleted_at is not None or JobStatus(job.status) in TERMINAL:
        state = "deleted" if job.deleted_at is not None else job.status
        if job.attempt == 0:
            logger.info("job %s was %s before it ran; this delivery does nothing", job.id, state)
        else:
            logger.info("job %s is already %s (attempts: %d); this delivery does nothing",
                        job.id, state, job.attempt)
        return False
    if job.cancel_requested:
        job.status, job.finished_at = JobStatus.canceled.value, now
        logger.info("job %s was canceled before it ran; marked canceled", job.id)
        return False
    if job.status == JobStatus.running.value:
        seen = _aware(job.heartbeat_at or job.started_at)
        age = (now - seen).total_seconds() if seen else float("inf")
        if _owner_alive(job.worker) and age < settings.job_heartbeat_timeout_s:
            logger.info("job %s: second delivery while attempt %d is alive on %s (heartbeat "
                        "%.1f s ago); leaving the job to it", job.id, job.attempt, job.worker, age)
            return False
        logger.warning("job %s: attempt %d on %s is gone (heartbeat %.0f s ago); taking over",
                       job.id, job.attempt, job.worker, age)
    if job.attempt >= settings.job_max_attempts:
        job.status, job.finished_at = JobStatus.failed.value, now
        job.error = (f"gave up after {job.attempt} attempts (the worker was lost each time; "
                     "the images may need more memory than a worker has)")
        logger.error("job %s: %s", job.id, job.error)
        return False
    return True


def _finish(job_id: str, attempt: int, **values: Any) -> bool:
    """Write a terminal state if ``attempt`` still owns the job; returns whether it did (and then
    emits the job's webhook event)."""
    with session_scope() as session:
        done = session.execute(fence(job_id, attempt).values(finished_at=utcnow(), **values)
                               ).rowcount == 1
    if done:
        job_ended(job_id)
    return done


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    """The trainer's metrics as strict JSON: nested dicts and lists kept (e.g. ``val_recall``
    per class), tensors and numpy scalars as numbers, NaN/inf as null, anything else as text."""
    return {str(k): _json_value(v) for k, v in (metrics or {}).items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def run_job(job_id: str) -> str:
    """Train job ``job_id`` end to end; returns what happened (for logs and tests).

    One of ``skipped`` (nothing to do, or a live attempt owns the job), ``succeeded``,
    ``failed``, ``canceled`` or ``superseded`` (a newer attempt took the job over).
    """
    with job_context(job_id):
        job = _claim(job_id)
        if job is None:
            return "skipped"
        settings = get_settings()
        logger.info("job %s attempt %d: training on %d images of %d classes", job_id,
                    job.attempt, job.num_images, len(job.class_names))
        with JobHeartbeat(job_id, job.attempt, settings.progress_interval_s,
                          heartbeat_interval_s(settings)) as beat:
            return _run_attempt(job, beat)


def _run_attempt(job: Adaptation, beat: JobHeartbeat) -> str:
    """Train, publish and record one claimed attempt; every error ends in a terminal state."""
    from mmlop_core import MMLoPError, TrainingCanceled

    try:
        adapter = _train(job, beat)
        if beat.should_stop():
            raise TrainingCanceled("canceled or superseded after the last step")
        return _publish(job, adapter)
    except TrainingCanceled:
        return _stopped(job)
    except (MMLoPError, BlobNotFound) as exc:
        if isinstance(exc, BlobNotFound) and _gone(job.id):
            return _stopped(job)
        logger.warning("job %s attempt %d failed: %s", job.id, job.attempt, exc)
        return _fail(job, str(exc))
    except OSError as exc:
        # Disk full or a write error in the blob store: a clear reason; a checkpoint already in
        # place is untouched (publish_dir is a rename).
        logger.error("job %s attempt %d failed: blob store error: %s", job.id, job.attempt, exc)
        return _fail(job, f"blob store error: {exc.strerror or exc} (errno {exc.errno}); "
                          "the checkpoint was not written")
    except Exception as exc:
        # The exception's class and text go to the log only: they describe our code, not the
        # user's input, and may hold paths or internals.
        logger.exception("job %s attempt %d crashed: %s", job.id, job.attempt,
                         exc.__class__.__name__)
        return _fail(job, f"internal error while training; it has been logged (job {job.id})")


def _load_images(job: Adaptation) -> tuple[list[Any], list[int]]:
    """Decode the job's stored uploads: (PIL images, class index per image)."""
    from mmlop_core import open_image

    blobs, max_pixels = get_blob_store(), get_settings().upload_max_pixels
    images, labels = [], []
    for key, label in job.images:
        data = _retrying(job, "reading the uploads", blobs.get, key)
        images.append(open_image(data, name=key.rsplit("/", 1)[-1], max_pixels=max_pixels))
        labels.append(int(label))
    return images, labels


def _train(job: Adaptation, beat: JobHeartbeat) -> Any:
    """Train the adapter within ``job_max_seconds``, counted once the backbone is ready.

    Loading torch and the backbone (a cold worker's first job) is the worker's start-up, not
    the job's work; decoding the images, the text features and the steps all count.
    """
    from mmlop_core import AdapterConfig, TrainConfig, train_adapter

    backbone = get_backbone()
    deadline = time.monotonic() + get_settings().job_max_seconds
    images, labels = _load_images(job)
    train_dict = dict(job.train_config)
    left = max(deadline - time.monotonic(), 0.001)
    if not train_dict.get("max_seconds") or train_dict["max_seconds"] > left:
        train_dict["max_seconds"] = left
    return train_adapter(backbone, images, labels, job.class_names,
                         config=AdapterConfig.from_dict(job.adapter_config),
                         train=TrainConfig.from_dict(train_dict), callbacks=[beat])


def _retrying(job: Adaptation, what: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, retried with backoff (0.5 s doubling, at most 10 s) while the blob store is
    unreachable, for ``blob_retry_s`` seconds; then ``BlobStoreError`` saying how long it tried
    (the attempt fails with it, see ``_run_attempt``)."""
    retry_s = get_settings().blob_retry_s
    deadline, delay, tries = time.monotonic() + retry_s, 0.5, 0
    while True:
        tries += 1
        try:
            return fn(*args)
        except BlobStoreError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BlobStoreError(exc.errno, f"object store unreachable for {tries} tries over "
                                     f"{retry_s:g} s while {what}") from exc
            logger.warning("job %s attempt %d: blob store unavailable while %s (%s); try %d, "
                           "next in %.1f s", job.id, job.attempt, what, exc, tries,
                           min(delay, left))
            time.sleep(min(delay, left))
            delay = min(delay * 2, 10.0)


def _publish(job: Adaptation, adapter: Any) -> str:
    """Write the checkpoint into place and mark the job succeeded (if the attempt still owns it)."""
    from mmlop_core import export_adapter_zip, save_adapter

    blobs = get_blob_store()
    tmp = blobs.temp_dir()
    try:
        nbytes = save_adapter(adapter, tmp / "adapter")
        export_adapter_zip(tmp / "adapter", tmp / "adapter.zip")
        _retrying(job, "publishing the checkpoint", blobs.publish_dir, tmp,
                  checkpoint_prefix(job.tenant_id, job.id))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already once published
    done = _finish(job.id, job.attempt, status=JobStatus.succeeded.value,
                   metrics=_jsonable(adapter.metrics),
                   trainable_parameters=int(adapter.trainable_parameters),
                   checkpoint_bytes=int(nbytes))
    if not done:
        return _stopped(job)
    metrics = adapter.metrics or {}
    logger.info("job %s attempt %d succeeded: %s steps in %.1f s, checkpoint %d bytes", job.id,
                job.attempt, metrics.get("steps"), float(metrics.get("seconds") or 0), nbytes)
    return "succeeded"


def _stopped(job: Adaptation) -> str:
    """The attempt lost the job: record a user's cancel, or log that a newer attempt owns it."""
    with session_scope() as session:
        row = session.get(Adaptation, job.id)
        canceled = row is None or row.deleted_at is not None or row.cancel_requested
        marked = row is not None and canceled and row.attempt == job.attempt and \
            row.status == JobStatus.running.value
        if marked:
            row.status, row.finished_at = JobStatus.canceled.value, utcnow()
        owner = (row.attempt, row.worker) if row is not None else (None, None)
    if marked:
        job_ended(job.id)
    if canceled:
        logger.info("job %s attempt %d stopped: the job was canceled%s", job.id, job.attempt,
                    " and deleted" if row is None or row.deleted_at is not None else "")
        _after_lost_fence(job.id, job.tenant_id, job.attempt)
        return "canceled"
    logger.warning("job %s attempt %d stopped: attempt %s on %s owns the job now", job.id,
                   job.attempt, *owner)
    return "superseded"


def _fail(job: Adaptation, error: str) -> str:
    """Mark the job failed with ``error`` (shown to the user) if the attempt still owns it."""
    if not _finish(job.id, job.attempt, status=JobStatus.failed.value, error=error[:2000]):
        return _stopped(job)
    return "failed"


def _gone(job_id: str) -> bool:
    with session_scope() as session:
        row = session.get(Adaptation, job_id)
        return row is None or row.deleted_at is not None or row.cancel_requested


def _after_lost_fence(job_id: str, tenant_id: str, attempt: int) -> None:
    """After losing ownership: if the job was deleted, remove anything this attempt wrote."""
    if _gone(job_id):
        get_blob_store().delete_prefix(job_prefix(tenant_id, job_id))
        logger.info("job %s attempt %d: removed the deleted job's files", job_id, attempt)


def _pid_alive(pid: int) -> bool:
    """True if process ``pid`` runs (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
        return stat[stat.rindex(")") + 2:][:1] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_orphaned_jobs() -> list[str]:
    """Re-enqueue ``running`` jobs whose worker process (on this host) is dead; returns ids."""
    from service.queue import enqueue_training

    host = socket.gethostname()
    with session_scope() as session:
        rows = session.execute(
            select(Adaptation.id, Adaptation.worker).where(
                Adaptation.status == JobStatus.running.value, Adaptation.deleted_at.is_(None))
        ).all()
    orphans = []
    for job_id, worker in rows:
        whost, _, pid = (worker or "").rpartition(":")
        if whost == host and pid.isdigit() and not _pid_alive(int(pid)):
            orphans.append(job_id)
    for job_id in orphans:
        logger.warning("job %s was left running by dead process %s; re-enqueuing", job_id,
                       host)
        enqueue_training(job_id)
    return orphans


@app.task(name=TRAIN_TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train_adaptation(job_id: str) -> str:
    """Celery task ``mmlop.train_adaptation``: takes only the job id."""
    return run_job(job_id)
