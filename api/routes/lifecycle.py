"""``POST /adaptations/{id}/cancel`` (stop a job, keep its record) and ``PATCH /adaptations/{id}``
(change its ``name`` and ``metadata``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import update

from api.adaptation_fields import AdaptationPatch, check_metadata, check_name
from api.deps import BlobsDep, SessionDep, TenantDep
from api.json_body import model_body
from api.problem import ProblemError
from api.routes.adaptations import _discard, get_owned, to_public
from api.schemas import AdaptationPublic
from service.jobs import JobStatus, job_prefix
from service.models import Adaptation, utcnow
from service.webhook_events import job_ended

router = APIRouter(prefix="/adaptations", tags=["adaptations"])
_patch_body, _PATCH_BODY = model_body(AdaptationPatch)

@router.post("/{adaptation_id}/cancel", response_model=AdaptationPublic,
             openapi_extra={"x-problems": {409: ["not-cancelable"]}},
             summary="Cancel a queued or running adaptation, keep it")
def cancel_adaptation(adaptation_id: str, session: SessionDep, tenant: TenantDep,
                      blobs: BlobsDep) -> AdaptationPublic:
    """Mark a queued or running job ``canceled`` (at once: the worker's fenced writes stop it at
    its next step, and a queued job is never trained), then delete its uploads: a canceled job
    has no checkpoint and nothing can resume it, so its space and quota are freed
    (``upload_bytes`` becomes 0). The record stays readable and listed; DELETE removes it.

    Idempotent: an already canceled job answers 200 with its record. Raises ProblemError 409
    ``not-cancelable`` for a succeeded or failed job, 404 for unknown or other tenants' ids.
    """
    job = get_owned(session, tenant, adaptation_id)
    if job.status != JobStatus.canceled.value:
        live = [JobStatus.queued.value, JobStatus.running.value]
        changed = session.execute(
            update(Adaptation)
            .where(Adaptation.id == job.id, Adaptation.status.in_(live),
                   Adaptation.deleted_at.is_(None))
            .values(status=JobStatus.canceled.value, cancel_requested=True,
                    finished_at=utcnow(), upload_bytes=0)
        ).rowcount
        session.commit()
        session.refresh(job)
        if changed:
            job_ended(job.id)  # its webhook event (service/webhook_events.py)
            _discard(blobs, job_prefix(job.tenant_id, job.id))
        elif job.status != JobStatus.canceled.value:  # a concurrent cancel is fine
            raise ProblemError(409, f"adaptation is {job.status}; only a queued or running "
                               "adaptation can be canceled", kind="not-cancelable",
                               reason=job.status)
    return to_public(job)


@router.patch("/{adaptation_id}", response_model=AdaptationPublic, openapi_extra=_PATCH_BODY,
              summary="Change an adaptation's name and metadata")
def patch_adaptation(adaptation_id: str, session: SessionDep, tenant: TenantDep,
                     body: AdaptationPatch = Depends(_patch_body)) -> AdaptationPublic:
    """Replace the members sent (``null`` clears one); the stored request hash is unchanged, so
    the creating request's Idempotency-Key still replays this record. Raises ProblemError 422
    naming the field (limits in ``api/adaptation_fields.py``), 404 for other tenants' ids."""
    name = check_name(body.name)
    metadata = check_metadata(body.metadata)
    job = get_owned(session, tenant, adaptation_id)
    if "name" in body.model_fields_set:
        job.name = name
    if "metadata" in body.model_fields_set:
        job.user_metadata = metadata
    session.commit()
    return to_public(job)
