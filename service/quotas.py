"""Per-tenant quotas, checked before a new adaptation is stored.

- ``quota_max_adapters``: live (not deleted) adaptations of the tenant, any state;
- ``quota_max_concurrent_jobs``: adaptations ``queued`` or ``running``;
- ``quota_max_stored_bytes``: ``upload_bytes`` + ``checkpoint_bytes`` of the tenant's live
  adaptations plus the new upload, from the database (never by walking the blob store; the
  checkpoint's zip copy is not counted, rows from before migration 0002 count no upload bytes).

A value of 0 disables that quota. Two simultaneous requests may both pass a check at the
boundary (the check is not serialised); the overshoot is at most the number of concurrent
requests of one tenant.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.jobs import JobStatus
from service.models import Adaptation
from service.settings import Settings


@dataclass
class QuotaExceeded(Exception):
    """A tenant quota that a new adaptation would pass: ``quota`` names it."""

    quota: str  # adapters | concurrent_jobs | stored_bytes
    limit: int
    used: int

    def __str__(self) -> str:
        return f"quota {self.quota} exceeded: {self.used} used, limit {self.limit}"


def stored_bytes(session: Session, tenant_id: str) -> int:
    """Upload and checkpoint bytes of the tenant's live adaptations (0 if none)."""
    total = func.coalesce(Adaptation.upload_bytes, 0) + func.coalesce(Adaptation.checkpoint_bytes, 0)
    return int(session.scalar(select(func.coalesce(func.sum(total), 0)).where(
        Adaptation.tenant_id == tenant_id, Adaptation.deleted_at.is_(None))) or 0)


def check_new_adaptation(session: Session, tenant_id: str, new_bytes: int,
                         settings: Settings) -> None:
    """Raise ``QuotaExceeded`` if a new adaptation of ``new_bytes`` upload bytes passes a quota."""
    live = [Adaptation.tenant_id == tenant_id, Adaptation.deleted_at.is_(None)]
    if settings.quota_max_adapters:
        used = session.scalar(select(func.count()).select_from(Adaptation).where(*live)) or 0
        if used + 1 > settings.quota_max_adapters:
            raise QuotaExceeded("adapters", settings.quota_max_adapters, used)
    if settings.quota_max_concurrent_jobs:
        active = [JobStatus.queued.value, JobStatus.running.value]
        used = session.scalar(select(func.count()).select_from(Adaptation).where(
            *live, Adaptation.status.in_(active))) or 0
        if used + 1 > settings.quota_max_concurrent_jobs:
            raise QuotaExceeded("concurrent_jobs", settings.quota_max_concurrent_jobs, used)
    if settings.quota_max_stored_bytes:
        used = stored_bytes(session, tenant_id)
        if used + new_bytes > settings.quota_max_stored_bytes:
            raise QuotaExceeded("stored_bytes", settings.quota_max_stored_bytes, used)
