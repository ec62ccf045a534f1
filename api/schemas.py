"""Pydantic request/response schemas (kept apart from the SQLAlchemy models)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.text import ScrubbedModel
from service.jobs import JobStatus


class Progress(BaseModel):
    """Training progress of a running job."""

    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    loss: float | None = None
    eta_s: float | None = Field(default=None, description="estimated seconds left")


def _as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class AdaptationPublic(ScrubbedModel):
    """An adaptation job as clients see it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    status: JobStatus
    name: str | None = Field(default=None, description="the owner's label (filter: ?name=)")
    metadata: dict[str, str] | None = Field(
        default=None, validation_alias="user_metadata",
        description="the owner's string keys and values (filter: ?metadata=key:value)")
    class_names: list[str]
    num_images: int
    progress: Progress | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None
    trainable_parameters: int | None = None
    checkpoint_bytes: int | None = None
    backbone: str
    pretrained: str
    adapter_config: dict[str, Any]
    train_config: dict[str, Any]
    attempt: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    callback_url: str | None = Field(default=None, description="where the terminal event is "
                                     "POSTed (docs: Webhooks); null: no webhook")

    _utc = field_validator("created_at", "started_at", "finished_at")(_as_utc)


class AdaptationEvent(ScrubbedModel):
    """``data`` of one ``GET /adaptations/{id}/events`` event: the members of an adaptation that
    change while it runs (the SSE ``event`` is ``status``, ``progress`` or ``deleted``)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    status: JobStatus | None = Field(description="null once the adaptation was deleted")
    progress: Progress | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None
    attempt: int = 0
    trainable_parameters: int | None = None
    checkpoint_bytes: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    _utc = field_validator("started_at", "finished_at")(_as_utc)


class AdaptationList(BaseModel):
    """One page of adaptations, newest first."""

    items: list[AdaptationPublic]
    total: int
    limit: int
    offset: int


class ClassifyJSON(BaseModel):
    """JSON body of ``POST /classify/{adapter_id}`` (strict: ``"top_k": "3"`` or ``true`` is a
    422, not 3 or 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    images: list[str] = Field(min_length=1, description="base64-encoded image files")
    top_k: int = Field(default=5, ge=1, le=1000)
    class_names: list[str] | None = Field(
        default=None, description="open vocabulary: score these names instead of the trained ones"
    )


class TrainingImageJSON(BaseModel):
    """One labelled training image of a JSON ``POST /adaptations`` body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    data: str = Field(description="the image file, base64-encoded (standard alphabet, padded)")
    label: str = Field(description="its class name")
    filename: str | None = Field(default=None, max_length=255,
                                 description="its original file name, used in error messages")


class AdaptationJSON(BaseModel):
    """JSON body of ``POST /adaptations``: the multipart form's fields, images as base64.

    Limits count the decoded bytes; the whole body is bounded by the request body limit
    (base64 adds a third) and parsed in memory, so large sets travel better as a multipart
    ``archive`` (streamed). ``name``, ``metadata`` and ``callback_url`` are checked as the
    form's fields of the same names. Strict types: a number where a string belongs is a 422.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    images: list[TrainingImageJSON] = Field(min_length=1)
    class_names: list[str] | None = Field(default=None,
                                          description="class order (default: sorted labels)")
    config: dict[str, Any] | None = Field(
        default=None, description='{"adapter": {...}, "train": {...}} or flat {"preset": "mmlop", "epochs": 5, ...}')
    name: str | None = Field(default=None, description="the owner's label")
    metadata: dict[str, Any] | None = Field(default=None, description="flat object of string values")
    callback_url: str | None = Field(default=None, description="webhook URL for the end of training")


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """JSON schema of ``model`` with its ``$defs`` inlined, for an ``openapi_extra`` request
    body (FastAPI leaves a model's ``$defs`` there, where ``#/$defs/..`` would not resolve)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


class PredictionPublic(ScrubbedModel):
    """One label and its softmax probability."""

    label: str
    score: float


class ImageResult(BaseModel):
    """Top-k predictions of one image."""

    index: int
    filename: str | None = None
    predictions: list[PredictionPublic]


class ClassifyPublic(ScrubbedModel):
    """Answer of ``POST /classify/{adapter_id}``."""

    adapter_id: str
    class_names: list[str]
    results: list[ImageResult]
