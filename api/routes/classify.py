"""``POST /classify/{adapter_id}``: top-k labels for one or many images."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.bounds import loads_bounded, parse_json_body
from api.checkpoints import adapter_dir
from api.deps import BlobsDep, SessionDep, SettingsDep, TenantDep
from api.json_body import read_json_body
from api.problem import ProblemError
from api.routes.adaptations import get_owned
from api.schemas import ClassifyJSON, ClassifyPublic, ImageResult, PredictionPublic
from api.uploads import check_class_names, decode_image, read_form, read_limited
from service.jobs import JobStatus

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/classify", tags=["classify"])
# The multipart parts /classify routes take; any other is refused (a typo would be ignored).
_FORM_FIELDS = frozenset({"images", "top_k", "class_names"})

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "top_k": {"type": "integer", "default": 5},
                        "class_names": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["images"],
                }
            },
            "application/json": {"schema": ClassifyJSON.model_json_schema()},
        },
    }
}


def _int_field(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        out = int(value)
    except (TypeError, ValueError) as exc:
        raise ProblemError(422, f"{name} must be an integer", kind="validation-error",
                           field=name) from exc
    if not 1 <= out <= 1000:
        raise ProblemError(422, f"{name} must be between 1 and 1000", kind="validation-error",
                           field=name)
    return out


async def _read_request(request: Request, settings: Any) -> tuple[list[tuple[str | None, bytes]], int, list[str] | None]:
    ctype = request.headers.get("content-type", "")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.upload_max_bytes:
        raise ProblemError(413, f"request body is larger than {settings.upload_max_bytes} bytes",
                           kind="too-large")
    top_k_q = request.query_params.get("top_k")
    if ctype.startswith("application/json"):
        raw = await read_json_body(request, settings.upload_json_max_bytes,
                                   "send large batches as multipart/form-data")
        body = parse_json_body(raw, ClassifyJSON)  # errors name class_names[1], as elsewhere
        images = []
        for n, text in enumerate(body.images):
            try:
                images.append((None, base64.b64decode(text, validate=True)))
            except (binascii.Error, ValueError) as exc:
                raise ProblemError(422, f"images[{n}] is not valid base64", kind="invalid-image",
                                   field=f"images[{n}]") from exc
        top_k = _int_field(top_k_q, "top_k", body.top_k)
        return images, top_k, body.class_names
    if ctype.startswith("multipart/form-data"):
        form = await read_form(request, settings.classify_max_images, settings.classify_max_class_names + 8,
                               fields_name="class_names", known=_FORM_FIELDS)
        try:
            uploads = [v for v in form.getlist("images") if isinstance(v, UploadFile)]
            images = []
            for n, up in enumerate(uploads):
                data = await run_in_threadpool(read_limited, up.file,
                                               settings.upload_max_file_bytes, f"images[{n}]")
                images.append((up.filename, data))
            top_k = _int_field(form.get("top_k") or top_k_q, "top_k", 5)
            if any(isinstance(v, UploadFile) for v in form.getlist("class_names")) or \
                    isinstance(form.get("top_k"), UploadFile):
                raise ProblemError(422, "top_k and class_names must be text fields",
                                   kind="validation-error", field="class_names")
            names_raw = [str(v) for v in form.getlist("class_names")]
        finally:
            await form.close()
        class_names: list[str] | None = None
        if names_raw:
            if len(names_raw) == 1 and names_raw[0].lstrip()[:1] in ("[", "{"):  # JSON: a list, or refused
                class_names = loads_bounded(names_raw[0], "class_names")
            else:
                class_names = names_raw
        return images, top_k, class_names
    raise ProblemError(415, "send multipart/form-data `images` or JSON {\"images\": [base64...]}",
                       kind="unsupported-media-type")


def _check_open_vocabulary(class_names: Any, settings: Any) -> None:
    """The training-time class-name checks plus a count cap (issue 12, A.1): 413 past
    ``classify_max_class_names``, 422 naming the entry otherwise."""
    if not isinstance(class_names, list):
        raise ProblemError(422, "class_names must be a list of strings", kind="validation-error",
                           field="class_names")
    if len(class_names) > settings.classify_max_class_names:
        raise ProblemError(413, f"{len(class_names)} class_names is more than the limit of "
                           f"{settings.classify_max_class_names} per request", kind="too-large",
                           field="class_names")
    if len(class_names) < 2:  # one name would always score 1.0
        raise ProblemError(422, "class_names needs at least two names, as a JSON list "
                           "('[\"bag\", \"coat\"]') or one form field per name",
                           kind="validation-error", field="class_names")
    check_class_names(class_names, settings)


def _check_images(images: list[tuple[str | None, bytes]], settings: Any) -> None:
    if not images:
        raise ProblemError(422, "no images; send at least one", kind="validation-error",
                           field="images")
    if len(images) > settings.classify_max_images:
        raise ProblemError(413, f"{len(images)} images is more than the limit of "
                           f"{settings.classify_max_images} per request", kind="too-large",
                           field="images")


def _pixels(images: list[tuple[str | None, bytes]], settings: Any, runtime: Any) -> Any:
    """Decode each image once, check it, and preprocess (run off the event loop):
    FloatTensor (k, 3, H, W); 503 while the backbone is not loaded."""
    import torch

    from mmlop_core.images import to_rgb

    pil = [decode_image(data, f"images[{n}]" + (f" ({name})" if name else ""), settings)[1]
           for n, (name, data) in enumerate(images)]
    runtime.wait()
    preprocess = runtime.backbone.preprocess
    return torch.stack([preprocess(to_rgb(im)) for im in pil])


def _results(images: list[tuple[str | None, bytes]], predictions: list) -> list[ImageResult]:
    return [ImageResult(index=n, filename=images[n][0],
                        predictions=[PredictionPublic(label=p.label, score=float(p.score)) for p in preds])
            for n, preds in enumerate(predictions)]


@router.post("/zeroshot", response_model=ClassifyPublic, openapi_extra=_BODY,
             summary="Classify images by zero-shot CLIP over class_names (no adapter)")
async def classify_zeroshot(request: Request, tenant: TenantDep, settings: SettingsDep) -> ClassifyPublic:
    """Top-k ``{label, score}`` per image against ``class_names`` (required, at least two) with
    the frozen backbone and the template ensemble, before any upload. Same limits and name
    checks as open-vocabulary classify; batched with adapters' images. ``adapter_id`` in the
    answer is ``"zeroshot"``."""
    images, top_k, class_names = await _read_request(request, settings)
    _check_images(images, settings)
    if class_names is None:
        raise ProblemError(422, "class_names is required: the names to score, as a JSON list "
                           "('[\"bag\", \"coat\"]') or one form field per name",
                           kind="validation-error", field="class_names")
    _check_open_vocabulary(class_names, settings)
    runtime = request.app.state.runtime
    pixels = await run_in_threadpool(_pixels, images, settings, runtime)
    predictions = await runtime.engine.classify_zeroshot(pixels, min(top_k, len(class_names)), class_names)
    return ClassifyPublic(adapter_id="zeroshot", class_names=class_names, results=_results(images, predictions))


@router.post("/{adapter_id}", response_model=ClassifyPublic, openapi_extra=_BODY,
             summary="Classify images with a trained adapter")
async def classify(adapter_id: str, request: Request, session: SessionDep, tenant: TenantDep,
                   settings: SettingsDep, blobs: BlobsDep) -> ClassifyPublic:
    """Top-k ``{label, score}`` per image; ``class_names`` scores an open vocabulary."""
    job = get_owned(session, tenant, adapter_id)
    if job.status != JobStatus.succeeded.value:
        detail = f"adaptation is {job.status}; it can classify only once it succeeded"
        if job.status == JobStatus.failed.value and job.error:
            detail += f" (error: {job.error})"
        raise ProblemError(409, detail, kind="adapter-not-ready", reason=job.status)
    tenant_id, trained_names, attempt = tenant.id, list(job.class_names), job.attempt
    session.close()  # do not hold a connection during inference
    images, top_k, class_names = await _read_request(request, settings)
    _check_images(images, settings)
    if class_names is not None:
        _check_open_vocabulary(class_names, settings)
    runtime = request.app.state.runtime
    pixels = await run_in_threadpool(_pixels, images, settings, runtime)
    # After the images are checked (422 first), as when the checkpoint was a local folder.
    local = await run_in_threadpool(adapter_dir, blobs, tenant_id, adapter_id, attempt)
    k = min(top_k, len(class_names or trained_names))
    with local:  # pinned in the read cache until loaded (or found loaded)
        predictions = await runtime.engine.classify(adapter_id, local.path, pixels, k, class_names)
    return ClassifyPublic(adapter_id=adapter_id, class_names=class_names or trained_names,
                          results=_results(images, predictions))
