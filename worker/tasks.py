"""Training task: take a job id, re-read the job from the DB, train with ``mmlop_core``, store.

Delivery semantics (at least once, so the task is idempotent):
- a job already succeeded/failed/canceled is left alone (duplicate delivery does nothing);
- every delivery that claims the job increments ``attempt`` (a fencing token) with a
  compare-and-set; an older attempt still running (a zombie) sees the mismatch at its next
  progress write and stops, and its result write is refused. A redelivery after the worker was
  SIGKILLed therefore retrains instead of skipping a job stuck in ``running``;
- the checkpoint is written into a temporary directory and moved into place with
  ``os.replace``, so exactly one checkpoint exists;
- after ``job_max_attempts`` claims the job is marked failed (poison-message guard).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import select, update

from service.blobs import BlobNotFound, get_blob_store
from service.db import session_scope
from service.jobs import TERMINAL, TRAIN_TASK_NAME, JobStatus, checkpoint_prefix, job_prefix
from service.models import Adaptation, utcnow
from service.settings import get_settings
from worker.celery_app import app

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


def _fence(job_id: str, attempt: int):  # noqa: ANN202 - SQLAlchemy update
    """UPDATE limited to the live, un-canceled job still owned by ``attempt``."""
    return update(Adaptation).where(
        Adaptation.id == job_id,
        Adaptation.attempt == attempt,
        Adaptation.status == JobStatus.running.value,
        Adaptation.cancel_requested.is_(False),
        Adaptation.deleted_at.is_(None),
    )


class JobCallback:
    """Training callback: writes progress (rate-limited) and stops when fenced out or canceled."""

    def __init__(self, job_id: str, attempt: int, interval_s: float) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.interval_s = interval_s
        self._last = 0.0
        self.stop = False

    def _sync(self, progress: dict[str, Any] | None) -> None:
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"] = progress
        with session_scope() as session:
            changed = session.execute(_fence(self.job_id, self.attempt).values(**values)).rowcount
        if changed == 0:
            logger.info("job %s attempt %d: canceled or superseded; stopping", self.job_id,
                        self.attempt)
            self.stop = True
        self._last = time.monotonic()

    def on_progress(self, p: Any) -> None:
        """Store the progress at most every ``interval_s`` seconds (and on the last step)."""
        last_step = p.step >= p.steps
        if not last_step and time.monotonic() - self._last < self.interval_s:
            return
        self._sync({"epoch": p.epoch, "epochs": p.epochs, "step": p.step, "steps": p.steps,
                    "loss": float(p.loss), "eta_s": round(float(p.eta_s), 2),
                    "images_per_s": round(float(p.images_per_s), 2)})

    def should_stop(self) -> bool:
        """True once the job was canceled/deleted or a newer attempt claimed it."""
        if not self.stop and time.monotonic() - self._last >= self.interval_s:
            self._sync(None)
        return self.stop


def _claim(job_id: str) -> Adaptation | None:
    """Claim the job for this delivery (compare-and-set on ``attempt``); None if nothing to do."""
    settings = get_settings()
    with session_scope() as session:
        job = session.scalar(select(Adaptation).where(Adaptation.id == job_id))
        if job is None:
            logger.warning("job %s does not exist; dropping the message", job_id)
            return None
        if job.deleted_at is not None or JobStatus(job.status) in TERMINAL:
            logger.info("job %s is %s; duplicate delivery ignored", job_id, job.status)
            return None
        now = utcnow()
        if job.cancel_requested:
            job.status, job.finished_at = JobStatus.canceled.value, now
            return None
        if job.attempt >= settings.job_max_attempts:
            job.status, job.finished_at = JobStatus.failed.value, now
            job.error = (f"gave up after {job.attempt} attempts (the worker was lost each time; "
                         "the images may need more memory than a worker has)")
            logger.error("job %s: %s", job_id, job.error)
            return None
        old = job.attempt
        claimed = session.execute(
            update(Adaptation)
            .where(Adaptation.id == job_id, Adaptation.attempt == old,
                   Adaptation.status.in_([JobStatus.queued.value, JobStatus.running.value]))
            .values(attempt=old + 1, status=JobStatus.running.value, worker=_worker_id(),
                    heartbeat_at=now, started_at=job.started_at or now, progress=None,
                    error=None)
        ).rowcount
        if claimed != 1:
            logger.info("job %s was claimed concurrently; this delivery does nothing", job_id)
            return None
    with session_scope() as session:
        return session.get(Adaptation, job_id)


def _finish(job_id: str, attempt: int, **values: Any) -> bool:
    """Write a terminal state if ``attempt`` still owns the job; returns whether it did."""
    with session_scope() as session:
        return session.execute(_fence(job_id, attempt).values(finished_at=utcnow(), **values)
                               ).rowcount == 1


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif hasattr(value, "item"):
            out[key] = value.item()
        else:
            out[key] = str(value)
    return out


def run_job(job_id: str) -> str:
    """Train job ``job_id`` end to end; returns what happened (for logs and tests)."""
    from mmlop_core import (AdapterConfig, MMLoPError, TrainConfig, TrainingCanceled,
                            export_adapter_zip, open_image, save_adapter, train_adapter)

    settings = get_settings()
    job = _claim(job_id)
    if job is None:
        return "skipped"
    attempt = job.attempt
    logger.info("job %s attempt %d: training %d images, %d classes", job_id, attempt,
                job.num_images, len(job.class_names))
    blobs = get_blob_store()
    callback = JobCallback(job_id, attempt, settings.progress_interval_s)
    tmp = None
    try:
        images, labels = [], []
        for key, label in job.images:
            images.append(open_image(blobs.get(key), name=key.rsplit("/", 1)[-1],
                                     max_pixels=settings.upload_max_pixels))
            labels.append(int(label))
        train_dict = dict(job.train_config)
        if not train_dict.get("max_seconds") or train_dict["max_seconds"] > settings.job_max_seconds:
            train_dict["max_seconds"] = settings.job_max_seconds
        adapter = train_adapter(
            get_backbone(), images, labels, job.class_names,
            config=AdapterConfig.from_dict(job.adapter_config),
            train=TrainConfig.from_dict(train_dict), callbacks=[callback],
        )
        if callback.should_stop():
            raise TrainingCanceled("canceled or superseded after the last step")
        tmp = blobs.temp_dir()
        nbytes = save_adapter(adapter, tmp / "adapter")
        export_adapter_zip(tmp / "adapter", tmp / "adapter.zip")
        prefix = checkpoint_prefix(job.tenant_id, job_id)
        blobs.publish_dir(tmp, prefix)
        tmp = None
        done = _finish(job_id, attempt, status=JobStatus.succeeded.value,
                       metrics=_jsonable(adapter.metrics),
                       trainable_parameters=int(adapter.trainable_parameters),
                       checkpoint_bytes=int(nbytes))
        if not done:
            _after_lost_fence(job_id, job.tenant_id, attempt)
            return "superseded"
        logger.info("job %s attempt %d succeeded (%d bytes)", job_id, attempt, nbytes)
        return "succeeded"
    except TrainingCanceled:
        with session_scope() as session:
            row = session.get(Adaptation, job_id)
            if row is not None and row.attempt == attempt and row.cancel_requested and \
                    row.status == JobStatus.running.value:
                row.status, row.finished_at = JobStatus.canceled.value, utcnow()
        _after_lost_fence(job_id, job.tenant_id, attempt)
        return "canceled"
    except (MMLoPError, BlobNotFound) as exc:
        if isinstance(exc, BlobNotFound) and _gone(job_id):
            _after_lost_fence(job_id, job.tenant_id, attempt)
            return "canceled"
        logger.warning("job %s attempt %d failed: %s", job_id, attempt, exc)
        _finish(job_id, attempt, status=JobStatus.failed.value, error=str(exc)[:2000])
        return "failed"
    except OSError as exc:
        # Disk full or a write error in the blob store: a clear reason; the temp dir is removed
        # below and a checkpoint already in place is untouched (publish_dir is a rename).
        logger.error("job %s attempt %d: blob store error: %s", job_id, attempt, exc)
        _finish(job_id, attempt, status=JobStatus.failed.value,
                error=f"blob store error: {exc.strerror or exc} (errno {exc.errno}); "
                      "the checkpoint was not written"[:2000])
        return "failed"
    except Exception as exc:
        # The exception's class and text go to the log only: they describe our code, not the
        # user's input, and may hold paths or internals.
        logger.exception("job %s attempt %d crashed: %s", job_id, attempt, exc.__class__.__name__)
        _finish(job_id, attempt, status=JobStatus.failed.value,
                error=f"internal error while training; it has been logged (job {job_id})")
        return "failed"
    finally:
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _gone(job_id: str) -> bool:
    with session_scope() as session:
        row = session.get(Adaptation, job_id)
        return row is None or row.deleted_at is not None or row.cancel_requested


def _after_lost_fence(job_id: str, tenant_id: str, attempt: int) -> None:
    """After losing ownership: if the job was deleted, remove anything this attempt wrote."""
    if _gone(job_id):
        get_blob_store().delete_prefix(job_prefix(tenant_id, job_id))
        logger.info("job %s attempt %d: job deleted; removed its data", job_id, attempt)


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
