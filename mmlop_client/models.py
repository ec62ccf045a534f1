"""Typed results: dataclasses mirroring the API's response schemas (``api/schemas.py``).

Built with ``from_dict`` from the decoded JSON; members the server adds later are ignored, so an
older client keeps working against a newer server. ``tests/mmlop_client`` checks the fields
against the served ``/openapi.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

# States a job never leaves (service/jobs.py TERMINAL).
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


def _known(cls: type, data: dict[str, Any], times: tuple[str, ...] = ()) -> dict[str, Any]:
    """The members of ``data`` that are fields of ``cls``; those named in ``times`` parsed from
    ISO 8601 (None when absent or null)."""
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    for name in times:
        values[name] = _time(values.get(name))
    return values


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Progress:
    """Training progress of a running job; ``eta_s`` is the server's estimate in seconds."""

    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Progress":
        """From the ``progress`` member of an adaptation."""
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class Adaptation:
    """An adaptation job (``AdaptationPublic``): status, progress, metrics, configs, times (UTC)."""

    id: str
    status: str  # queued | running | succeeded | failed | canceled
    class_names: list[str]
    num_images: int
    backbone: str
    pretrained: str
    adapter_config: dict[str, Any]
    train_config: dict[str, Any]
    attempt: int
    created_at: datetime
    progress: Progress | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None
    trainable_parameters: int | None = None
    checkpoint_bytes: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    callback_url: str | None = None
    name: str | None = None
    metadata: dict[str, str] | None = None

    @property
    def done(self) -> bool:
        """True once the job is succeeded, failed or canceled."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Adaptation":
        """From a decoded ``AdaptationPublic`` body."""
        values = _known(cls, data, ("created_at", "started_at", "finished_at"))
        if values.get("progress") is not None:
            values["progress"] = Progress.from_dict(values["progress"])
        return cls(**values)


@dataclass(frozen=True)
class AdaptationEvent:
    """One event of ``events(id)`` (``GET /adaptations/{id}/events``, ``AdaptationEvent``).

    ``event`` is ``status`` (the status changed; also the first event), ``progress`` (a
    training step) or ``deleted`` (``status`` is then None); ``event_id`` is the SSE id to resume
    after (``events(id, last_event_id=...)``); the other members are the adaptation's changing
    ones, as in ``Adaptation``.
    """

    event: str = field(metadata={"openapi": False})  # the SSE frame's, not in the JSON data
    event_id: str = field(metadata={"openapi": False})
    id: str
    status: str | None
    progress: Progress | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None
    attempt: int = 0
    trainable_parameters: int | None = None
    checkpoint_bytes: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        """True for the last event of a job: a terminal status, or ``deleted``."""
        return self.event == "deleted" or self.status in TERMINAL_STATUSES

    @classmethod
    def from_sse(cls, event: str, event_id: str, data: dict[str, Any]) -> "AdaptationEvent":
        """From one Server-Sent Event: its ``event``, ``id`` and decoded ``data``."""
        values = _known(cls, data, ("started_at", "finished_at"))
        if values.get("progress") is not None:
            values["progress"] = Progress.from_dict(values["progress"])
        return cls(event=event, event_id=event_id, **values)

    def apply_to(self, job: Adaptation) -> Adaptation:
        """``job`` with this event's members (``job`` as ``get`` returned it before)."""
        changed = {f.name: getattr(self, f.name) for f in fields(self)
                   if f.name not in ("event", "event_id", "id")}
        if changed["status"] is None:
            changed.pop("status")
        return replace(job, **changed)


@dataclass(frozen=True)
class AdaptationList:
    """One page of adaptations, newest first (``AdaptationList``)."""

    items: list[Adaptation]
    total: int
    limit: int
    offset: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AdaptationList":
        """From a decoded ``GET /adaptations`` body."""
        return cls(items=[Adaptation.from_dict(i) for i in data["items"]], total=data["total"],
                   limit=data["limit"], offset=data["offset"])


@dataclass(frozen=True)
class Prediction:
    """One label and its softmax probability (``PredictionPublic``)."""

    label: str
    score: float


@dataclass(frozen=True)
class ImageResult:
    """Top-k predictions of one image, best first (``ImageResult``); ``index`` is its position."""

    index: int
    predictions: list[Prediction]
    filename: str | None = None

    @property
    def top(self) -> Prediction:
        """The best prediction."""
        return self.predictions[0]


@dataclass(frozen=True)
class ClassifyResult:
    """Answer of ``classify`` (``ClassifyPublic``): one ``ImageResult`` per image, in order."""

    adapter_id: str
    class_names: list[str]
    results: list[ImageResult] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassifyResult":
        """From a decoded ``POST /classify/{id}`` body."""
        results = [ImageResult(index=r["index"], filename=r.get("filename"),
                               predictions=[Prediction(**_known(Prediction, p))
                                            for p in r["predictions"]])
                   for r in data["results"]]
        return cls(adapter_id=data["adapter_id"], class_names=data["class_names"], results=results)
