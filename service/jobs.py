"""Job states and the blob-key layout of a job."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Lifecycle of an adaptation job: queued -> running -> succeeded | failed | canceled."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def terminal(self) -> bool:
        """True for states a job never leaves."""
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.canceled})

TRAIN_TASK_NAME = "mmlop.train_adaptation"


def job_prefix(tenant_id: str, job_id: str) -> str:
    """Blob-store prefix holding everything of one job."""
    return f"tenants/{tenant_id}/adaptations/{job_id}"


def upload_key(tenant_id: str, job_id: str, index: int, suffix: str) -> str:
    """Blob key of the ``index``-th uploaded training image."""
    return f"{job_prefix(tenant_id, job_id)}/uploads/{index:06d}{suffix}"


def checkpoint_prefix(tenant_id: str, job_id: str) -> str:
    """Blob prefix of the checkpoint: ``adapter/`` (two files) and ``adapter.zip``."""
    return f"{job_prefix(tenant_id, job_id)}/checkpoint"
