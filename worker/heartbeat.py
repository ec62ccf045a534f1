"""The running attempt's hold on its job: heartbeat thread, progress writes, stop checks.

Every write is fenced (``fence``): it only touches the job while this attempt owns it, it is
still ``running``, not canceled and not deleted. A write that touches no row means the attempt
lost the job, and the trainer is told to stop at its next check.

The heartbeat is written from a background thread every ``interval_s`` for as long as the
attempt runs, whatever the main thread is doing (decoding images, computing the text features
of every class before the first step, one long step, writing the checkpoint): torch releases
the GIL in its kernels. So the reconciler and a second delivery always see a live owner as live.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import Update, update

from service.db import session_scope
from service.jobs import JobStatus
from service.models import Adaptation, utcnow
from service.settings import Settings

logger = logging.getLogger(__name__)


def fence(job_id: str, attempt: int) -> Update:
    """UPDATE limited to the live, un-canceled job still owned by ``attempt``."""
    return update(Adaptation).where(
        Adaptation.id == job_id,
        Adaptation.attempt == attempt,
        Adaptation.status == JobStatus.running.value,
        Adaptation.cancel_requested.is_(False),
        Adaptation.deleted_at.is_(None),
    )


def heartbeat_interval_s(settings: Settings) -> float:
    """Seconds between heartbeats: a quarter of ``job_heartbeat_timeout_s``, at most 60."""
    return min(settings.job_heartbeat_timeout_s / 4, 60.0)


class JobHeartbeat:
    """Training callback and heartbeat of one attempt; use as a context manager.

    ``on_progress`` stores progress at most every ``progress_interval_s`` seconds (and on the
    last step); ``should_stop`` is True once the job was canceled or deleted or a newer attempt
    claimed it. The thread started by ``__enter__`` writes ``heartbeat_at`` every
    ``interval_s`` seconds until ``__exit__``.
    """

    def __init__(self, job_id: str, attempt: int, progress_interval_s: float,
                 interval_s: float) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.progress_interval_s = progress_interval_s
        self.interval_s = interval_s
        self.lost = False  # set once a fenced write touched no row
        self._last_write = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id[:8]}",
                                        daemon=True)

    def __enter__(self) -> "JobHeartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _write(self, progress: dict[str, Any] | None) -> None:
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"] = progress
        with session_scope() as session:
            changed = session.execute(fence(self.job_id, self.attempt).values(**values)).rowcount
        if changed == 0 and not self.lost:
            self.lost = True
            logger.info("job %s attempt %d no longer owns the job (canceled, deleted or taken "
                        "over); stopping", self.job_id, self.attempt)
        self._last_write = time.monotonic()

    def _beat(self) -> None:
        while not self._done.wait(self.interval_s):
            try:
                self._write(None)
            except Exception:  # noqa: BLE001 - database down: the next beat retries
                logger.warning("job %s attempt %d: heartbeat write failed", self.job_id,
                               self.attempt, exc_info=True)
            if self.lost:
                return

    def on_progress(self, p: Any) -> None:
        """Store the progress at most every ``progress_interval_s`` seconds (and on the last step)."""
        last_step = p.step >= p.steps
        if not last_step and time.monotonic() - self._last_write < self.progress_interval_s:
            return
        self._write({"epoch": p.epoch, "epochs": p.epochs, "step": p.step, "steps": p.steps,
                     "loss": float(p.loss), "eta_s": round(float(p.eta_s), 2),
                     "images_per_s": round(float(p.images_per_s), 2)})

    def should_stop(self) -> bool:
        """True once the job was canceled/deleted or a newer attempt claimed it."""
        if not self.lost and time.monotonic() - self._last_write >= self.progress_interval_s:
            self._write(None)
        return self.lost
