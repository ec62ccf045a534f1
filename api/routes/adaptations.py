"""``/adaptations``: create (upload + enqueue), read, list, cancel/delete, download checkpoint."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from api import adaptation_fields
from api.bounds import INT32_MAX, loads_bounded
from api.callback_url import check_callback
from api.checkpoints import adapter_zip
from api.config_form import check_init_words, check_template, parse_config
from api.deps import BlobsDep, SessionDep, SettingsDep, TenantDep
from api.json_body import read_json_body
from api.problem import BACKBONE_UNAVAILABLE, ProblemError
from api.schemas import AdaptationJSON, AdaptationList, AdaptationPublic, inline_schema
from api.upload_json import json_form
from api.uploads import ImageItem, check_classes, check_total, file_item, read_archive, read_form
from service import queue, quotas
from service.blob_batch import put_all
from service.blobs import BlobStore
from service.db import get_sessionmaker
from service.jobs import JobStatus, job_prefix, upload_key
from service.models import Adaptation, Tenant, new_id, utcnow
from service.settings import Settings
from service.webhook_events import job_ended

logger = logging.getLogger(__name__)

# The multipart parts POST /adaptations takes; any other is refused (a typo would be ignored).
CREATE_FIELDS = frozenset({"images", "labels", "archive", "class_names", "config", "name",
                           "metadata", "callback_url"})

router = APIRouter(prefix="/adaptations", tags=["adaptations"])

_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                                   "description": "training images (with a parallel `labels`)"},
                        "labels": {"type": "array", "items": {"type": "string"},
                                   "description": "class name of each image, same order"},
                        "archive": {"type": "string", "format": "binary",
                                    "description": "zip with one folder per class"},
                        "class_names": {"type": "array", "items": {"type": "string"},
                                        "description": "class order (default: sorted labels)"},
                        "config": {"type": "string",
                                   "description": 'JSON {"adapter": {...}, "train": {...}} or flat '
                                                  '{"preset": "mmlop", "epochs": 5, ...}'},
                        "callback_url": {"type": "string", "format": "uri",
                                         "description": "https URL that gets the signed "
                                                        "adaptation.succeeded|failed|canceled "
                                                        "event (public addresses only)"},
                    },
                }
            },
            "application/json": {"schema": inline_schema(AdaptationJSON)},
        },
    }
}


def get_owned(session: Session, tenant: Tenant, adaptation_id: str) -> Adaptation:
    """The tenant's live adaptation ``adaptation_id``; 404 for unknown or other tenants' ids."""
    job = session.scalar(
        select(Adaptation).where(
            Adaptation.id == adaptation_id,
            Adaptation.tenant_id == tenant.id,
            Adaptation.deleted_at.is_(None),
        )
    )
    if job is None:
        raise ProblemError(404, f"no adaptation {adaptation_id!r}", kind="not-found")
    return job


def to_public(job: Adaptation) -> AdaptationPublic:
    """Response model of a job."""
    return AdaptationPublic.model_validate(job)


def _parse_class_names(values: list[str]) -> list[str] | None:
    if not values:
        return None
    if len(values) == 1 and values[0].lstrip().startswith("["):
        parsed = loads_bounded(values[0], "class_names")
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise ProblemError(422, "class_names must be a list of strings",
                               kind="validation-error", field="class_names")
        values = parsed
    names = [v.strip() for v in values]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ProblemError(422, "class_names must be non-empty and distinct",
                           kind="validation-error", field="class_names")
    return names


def _request_hash(items: list[ImageItem], class_names: list[str], adapter_cfg: dict,
                  train_cfg: dict, name: str | None = None,
                  metadata: dict[str, str] | None = None, callback_url: str | None = None) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item.label.encode() + b"\0" + item.sha256)
    h.update(json.dumps([class_names, adapter_cfg, train_cfg], sort_keys=True).encode())
    if name is not None or metadata is not None:  # requests without them keep their old hash
        h.update(json.dumps({"name": name, "metadata": metadata}, sort_keys=True).encode())
    if callback_url is not None:  # requests without one keep their old hash
        h.update(json.dumps({"callback_url": callback_url}).encode())
    return h.hexdigest()


def _replay(session: Session, tenant: Tenant, key: str, digest: str) -> Adaptation | None:
    job = session.scalar(
        select(Adaptation).where(Adaptation.tenant_id == tenant.id,
                                 Adaptation.idempotency_key == key)
    )
    if job is None:
        return None
    if job.request_hash != digest:
        raise ProblemError(422, "Idempotency-Key was already used with a different request body",
                           kind="idempotency-key-reused", field="Idempotency-Key")
    return job


def _create(tenant_id: str, items: list[ImageItem], class_names_in: list[str] | None,
            raw_config: str | None, idem_key: str | None, settings: Settings,
            blobs: BlobStore, name: str | None = None,
            metadata: dict[str, str] | None = None,
            callback_url: Any = None) -> tuple[Adaptation, bool]:
    """Validate, store uploads durably, insert the job; returns (job, created).

    ``callback_url`` (the form's raw value) is checked here (``api/callback_url.py``: syntax,
    length, SSRF; it resolves the host) and is part of the request hash too.

    ``name`` and ``metadata`` were checked by ``api.adaptation_fields``; they are part of the
    request hash (a reused Idempotency-Key with other ones is refused)."""
    if not items:
        raise ProblemError(422, "no training images; send `images` + `labels` or an `archive`",
                           kind="validation-error", field="images")
    config = parse_config(raw_config, settings)
    adapter_cfg, train_cfg = config.adapter, config.train
    labels_seen = sorted({i.label for i in items})
    class_names = class_names_in or labels_seen
    index = {name: k for k, name in enumerate(class_names)}
    for item in items:
        if item.label not in index:
            raise ProblemError(422, f"label {item.label!r} of {item.filename} is not in class_names",
                               kind="validation-error", field="labels")
    if len(class_names) < 2:
        raise ProblemError(422, "need at least two classes", kind="validation-error",
                           field="class_names")
    check_classes(items, class_names, settings)
    check_template(config, class_names)
    check_init_words(config)
    callback_url = check_callback(callback_url, settings)
    digest = _request_hash(items, class_names, adapter_cfg, train_cfg, name, metadata,
                           callback_url)
    with get_sessionmaker()() as session:
        tenant = session.get(Tenant, tenant_id)
        job = None
        if idem_key:
            existing = _replay(session, tenant, idem_key, digest)
            if existing is not None and not _enqueue_failed(existing):
                return existing, False
            if existing is not None:
                # The original request got a 503 because the broker was down: retry the enqueue.
                existing.status, existing.error, existing.finished_at = \
                    JobStatus.queued.value, None, None
                session.commit()
                job = existing
    if job is None:
        with get_sessionmaker()() as session:
            quotas.check_new_adaptation(session, tenant_id, sum(i.size for i in items),
                                        settings)
        job = _store_new(tenant_id, items, class_names, index, digest, adapter_cfg, train_cfg,
                         idem_key, settings, blobs, name, metadata, callback_url)
        if isinstance(job, tuple):
            return job
    return _enqueue(job), True


# RFC 8941 sf-string characters (printable ASCII, space included), 1..200 of them.
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,200}")
_JSON_ADVICE = ("send large training sets as multipart/form-data (images + labels, "
                "or an archive), which is streamed")
_ENQUEUE_ERROR = "could not enqueue the job"


def _enqueue_failed(job: Adaptation) -> bool:
    return job.status == JobStatus.failed.value and (job.error or "").startswith(_ENQUEUE_ERROR)


def _store_new(tenant_id: str, items: list[ImageItem], class_names: list[str],
               index: dict[str, int], digest: str, adapter_cfg: dict, train_cfg: dict,
               idem_key: str | None, settings: Settings, blobs: BlobStore,
               name: str | None = None,
               metadata: dict[str, str] | None = None,
               callback_url: str | None = None) -> Adaptation | tuple[Adaptation, bool]:
    """Store the uploads, then insert the job row; (existing job, False) on an idempotency race."""
    with get_sessionmaker()() as session:
        tenant = session.get(Tenant, tenant_id)
        job_id = new_id()
        keys = [upload_key(tenant_id, job_id, n, item.suffix) for n, item in enumerate(items)]
        try:
            # concurrent PUTs, each streamed in chunks; none in flight once put_all ends
            put_all(blobs, [(key, item.open, item.size) for key, item in zip(keys, items)])
            manifest = [[key, index[item.label]] for key, item in zip(keys, items)]
            job = Adaptation(
                id=job_id, tenant_id=tenant_id, status=JobStatus.queued.value,
                idempotency_key=idem_key, request_hash=digest, class_names=class_names,
                images=manifest, num_images=len(manifest), adapter_config=adapter_cfg,
                upload_bytes=sum(item.size for item in items),
                train_config=train_cfg, backbone=settings.backbone, pretrained=settings.pretrained,
                attempt=0, cancel_requested=False, created_at=utcnow(),
                name=name, user_metadata=metadata, callback_url=callback_url,
            )
            session.add(job)
            session.commit()
        except IntegrityError:
            # A concurrent request with the same Idempotency-Key won the race.
            session.rollback()
            blobs.delete_prefix(job_prefix(tenant_id, job_id))
            existing = _replay(session, tenant, idem_key or "", digest)
            if existing is None:
                raise
            return existing, False
        except BaseException:
            session.rollback()
            _discard(blobs, job_prefix(tenant_id, job_id))
            raise
    return job


def _discard(blobs: BlobStore, prefix: str) -> None:
    """Best-effort removal of a job's blobs (its row is gone or deleted): the reconciler
    sweeps what stays when the store is unreachable."""
    try:
        blobs.delete_prefix(prefix)
    except OSError:
        logger.warning("could not remove %s now; the reconciler will", prefix,
                       exc_info=True)


def _enqueue(job: Adaptation) -> Adaptation:
    """Send the job to the broker; on failure mark it failed and answer 503."""
    try:
        queue.enqueue_training(job.id)
    except Exception as exc:  # noqa: BLE001 - broker down: fail the job, answer 503
        logger.exception("enqueue failed for job %s", job.id)
        with get_sessionmaker()() as session:
            row = session.get(Adaptation, job.id)
            row.status = JobStatus.failed.value
            row.error = f"{_ENQUEUE_ERROR}: {exc.__class__.__name__}"
            row.finished_at = utcnow()
            session.commit()
        raise ProblemError(503, "the job queue is unavailable; retry later with the same "
                           "Idempotency-Key", kind="queue-unavailable",
                           headers={"Retry-After": "30"}) from exc
    return job


def _collect_items(form: Any, settings: Settings) -> tuple[list[ImageItem], list[str] | None, str | None]:
    images = [v for v in form.getlist("images") if isinstance(v, UploadFile)]
    stray = [v for v in form.getlist("images") if not isinstance(v, UploadFile)]
    if stray:
        raise ProblemError(422, "images must be file parts", kind="validation-error", field="images")
    if any(isinstance(v, UploadFile) for v in form.getlist("labels") + form.getlist("class_names")):
        raise ProblemError(422, "labels and class_names must be text fields, not files",
                           kind="validation-error", field="labels")
    labels = [str(v) for v in form.getlist("labels")]
    archives = [v for v in form.getlist("archive") if isinstance(v, UploadFile)]
    config = form.get("config")
    if config is not None and not isinstance(config, str):
        raise ProblemError(422, "config must be a text field holding JSON", kind="invalid-config",
                           field="config")
    class_names = _parse_class_names([str(v) for v in form.getlist("class_names")])
    if archives and images:
        raise ProblemError(422, "send either `images` + `labels` or one `archive`, not both",
                           kind="validation-error", field="archive")
    if len(archives) > 1:
        raise ProblemError(422, "send one `archive`", kind="validation-error", field="archive")
    if archives:
        items = read_archive(archives[0].file, settings)
    else:
        if len(images) != len(labels):
            raise ProblemError(422, f"got {len(images)} images but {len(labels)} labels; send one "
                               "label per image, in the same order", kind="validation-error",
                               field="labels")
        if len(images) > settings.upload_max_files:
            raise ProblemError(413, f"{len(images)} images is more than the limit of "
                               f"{settings.upload_max_files}", kind="too-large", field="images")
        items = []
        for n, (upload, label) in enumerate(zip(images, labels)):
            name = f"images[{n}]" + (f" ({upload.filename})" if upload.filename else "")
            if not label.strip():
                raise ProblemError(422, f"labels[{n}] is empty", kind="validation-error",
                                   field="labels")
            items.append(file_item(upload.file, name, label.strip(), upload.filename or name,
                                   settings))
        check_total(items, settings)
    return items, class_names, config


@router.post("", status_code=202, response_model=AdaptationPublic, openapi_extra=_CREATE_BODY,
             summary="Upload labelled photos and start training an adapter")
async def create_adaptation(request: Request, response: Response, tenant: TenantDep,
                            settings: SettingsDep, blobs: BlobsDep) -> AdaptationPublic:
    """Store the uploads durably, then enqueue the training job; answers 202 + ``Location``."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.upload_max_bytes + 1_000_000:
        raise ProblemError(413, f"request body is larger than {settings.upload_max_bytes} bytes",
                           kind="too-large")
    ctype = request.headers.get("content-type", "")
    is_json = ctype.startswith("application/json")
    if not is_json and not ctype.startswith("multipart/form-data"):
        raise ProblemError(415, "send multipart/form-data with `images`+`labels` or `archive`, or "
                           'JSON {"images": [{"data": "<base64>", "label": "..."}, ...]}',
                           kind="unsupported-media-type")
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None and runtime.failed:  # the worker shares these settings: the job could only fail
        raise ProblemError(503, BACKBONE_UNAVAILABLE, kind="backbone-unavailable")
    idem_key = request.headers.get("idempotency-key")
    if idem_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idem_key):
        raise ProblemError(422, "Idempotency-Key must be 1..200 printable ASCII characters "
                           "(space to '~'; no tabs or other control characters)",
                           kind="validation-error", field="Idempotency-Key")
    if is_json:  # the same form, images spooled from base64 (api/upload_json.py)
        raw = await read_json_body(request, settings.upload_json_max_bytes, _JSON_ADVICE)
        form = await run_in_threadpool(json_form, raw, settings)
    else:
        form = await read_form(request, settings.upload_max_files,
                               settings.upload_max_files * 2 + 100, fields_name="images",
                               known=CREATE_FIELDS)
    try:
        name, metadata = adaptation_fields.form_fields(form)
        items, class_names, config = await run_in_threadpool(_collect_items, form, settings)
        job, _created = await run_in_threadpool(
            _create, tenant.id, items, class_names, config, idem_key, settings, blobs, name,
            metadata, form.get("callback_url")
        )
    finally:
        await form.close()
    response.headers["Location"] = str(request.url_for("get_adaptation", adaptation_id=job.id))
    return to_public(job)


@router.get("", response_model=AdaptationList, summary="List adaptations, newest first")
def list_adaptations(session: SessionDep, tenant: TenantDep,
                     limit: int = Query(20, ge=1, le=200),
                     offset: int = Query(0, ge=0, le=INT32_MAX),
                     status: JobStatus | None = None,
                     name: str | None = Query(None, max_length=adaptation_fields.NAME_MAX_CHARS,
                                              description="exact name"),
                     metadata: list[str] = Query(
                         [], max_length=adaptation_fields.METADATA_MAX_KEYS,
                         description="key:value, exact; repeat for several (all must match)"),
                     ) -> AdaptationList:
    """One page of the tenant's adaptations, newest first; ``name`` and each ``metadata``
    ``key:value`` filter exactly."""
    where = [Adaptation.tenant_id == tenant.id, Adaptation.deleted_at.is_(None),
             *adaptation_fields.list_filters(name, metadata)]
    if status is not None:
        where.append(Adaptation.status == status.value)
    total = session.scalar(select(func.count()).select_from(Adaptation).where(*where)) or 0
    rows = session.scalars(
        select(Adaptation).where(*where)
        .order_by(Adaptation.created_at.desc(), Adaptation.id.desc())
        .limit(limit).offset(offset)
    ).all()
    return AdaptationList(items=[to_public(r) for r in rows], total=total, limit=limit,
                          offset=offset)


@router.get("/{adaptation_id}", response_model=AdaptationPublic, summary="Status of an adaptation")
def get_adaptation(adaptation_id: str, session: SessionDep, tenant: TenantDep) -> AdaptationPublic:
    """Status, progress, metrics and error of one adaptation."""
    return to_public(get_owned(session, tenant, adaptation_id))


@router.delete("/{adaptation_id}", status_code=204, summary="Cancel and delete an adaptation")
def delete_adaptation(adaptation_id: str, request: Request, session: SessionDep,
                      tenant: TenantDep, blobs: BlobsDep) -> Response:
    """Cancel the job if it is queued or running, then delete its uploads and checkpoint."""
    job = get_owned(session, tenant, adaptation_id)
    now = utcnow()
    job.cancel_requested = True
    canceled = not JobStatus(job.status).terminal
    if canceled:
        job.status = JobStatus.canceled.value
        job.finished_at = now
    job.deleted_at = now
    job.idempotency_key = None
    session.commit()
    if canceled:
        job_ended(job.id)
    _discard(blobs, job_prefix(tenant.id, job.id))
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        runtime.invalidate(job.id)
    return Response(status_code=204)


@router.get("/{adaptation_id}/checkpoint", summary="Download the adapter checkpoint (zip)",
            response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download_checkpoint(adaptation_id: str, session: SessionDep, tenant: TenantDep,
                        blobs: BlobsDep) -> StreamingResponse:
    """The adapter as a zip of ``adapter_config.json`` + ``adapter_model.safetensors``."""
    job = get_owned(session, tenant, adaptation_id)
    if job.status != JobStatus.succeeded.value:
        raise ProblemError(409, f"adaptation is {job.status}; a checkpoint exists only once it "
                           "succeeded", kind="adapter-not-ready", reason=job.status)
    with adapter_zip(blobs, tenant.id, job.id, job.attempt) as local:
        # opened while pinned: the cache may evict the entry later, the open file stays whole
        src = open(local.path / "adapter.zip", "rb")  # noqa: SIM115 - closed by _file_chunks
    return StreamingResponse(_file_chunks(src), media_type="application/zip", headers={
        "Content-Length": str(os.fstat(src.fileno()).st_size),
        "Content-Disposition": f'attachment; filename="adapter-{job.id}.zip"'})


def _file_chunks(src: BinaryIO) -> Iterator[bytes]:
    """``src`` in 256 KiB chunks; closes it at the end or when the client goes away."""
    with src:
        while chunk := src.read(256 * 1024):
            yield chunk
