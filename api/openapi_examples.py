"""Per-operation additions to the OpenAPI document (used by ``api/openapi.py``): request and
answer examples, the problem kinds an operation can answer beyond its route traits, and the
``Idempotency-Key`` header of ``POST /adaptations``.

Keyed by (lower-case method, path template). An entry for a path that no route serves is
ignored; a content type the operation lacks gets no example.
"""

from __future__ import annotations

from typing import Any

_JOB_ID = "3f0c2a9e-8d1b-4f7e-9a57-2b6f1d0c4e11"

ADAPTATION_EXAMPLE: dict[str, Any] = {
    "id": _JOB_ID, "status": "running", "class_names": ["bag", "coat", "sneaker"],
    "num_images": 48,
    "progress": {"epoch": 2, "epochs": 5, "step": 13, "steps": 30, "loss": 0.412, "eta_s": 21.5},
    "metrics": None, "error": None, "trainable_parameters": 20480, "checkpoint_bytes": None,
    "backbone": "ViT-B-16", "pretrained": "openai",
    "adapter_config": {"preset": "mmlop", "depth": 9, "rank": 8},
    "train_config": {"epochs": 5, "shots": 16, "seed": 1}, "attempt": 1,
    "created_at": "2026-11-29T21:03:12.511Z", "started_at": "2026-11-29T21:03:13.020Z",
    "finished_at": None,
}

CLASSIFY_EXAMPLE: dict[str, Any] = {
    "adapter_id": _JOB_ID, "class_names": ["bag", "coat", "sneaker"],
    "results": [{"index": 0, "filename": "shoe.jpg", "predictions": [
        {"label": "sneaker", "score": 0.93}, {"label": "bag", "score": 0.05}]}],
}

_CLASSIFY_REQUEST = {"images": ["iVBORw0KGgoAAAANSUhEUgAAAAgAAAAIC...(base64 of a PNG/JPEG)"],
                     "top_k": 2}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[ -~]+$"},
    "example": "2f1d6c1e-photos-2026-11-29",
    "description": (
        "Makes the create safe to retry (the Python client sends one on every call). The first "
        "request with a key creates the job; a later one with the same key and the same body "
        "(images, labels, class names, config, name, metadata, callback_url) answers 202 with that same job "
        "instead of a new one, and re-enqueues it if its enqueue had failed (503 "
        "`queue-unavailable`). The same key with a different body is 422 "
        "`idempotency-key-reused` (field `Idempotency-Key`). Keys are per tenant, 1..200 "
        "printable ASCII characters (space to `~`; others are a 422 naming the header); "
        "deleting the job frees its key."),
}

_UPLOAD_422 = ["invalid-config", "invalid-image", "invalid-archive", "invalid-class-name",
               "invalid-data", "bad-multipart"]
_MODEL_503 = ["backbone-loading", "backbone-unavailable", "overloaded", "blob-store-unavailable"]

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/readyz"): {"problems": {503: ["not-ready"]}},
    ("get", "/metrics"): {"problems": {401: ["unauthorized"], 429: ["auth-rate-limited"]}},
    ("post", "/adaptations"): {
        "parameters": [IDEMPOTENCY_KEY],
        "request": {"multipart/form-data": {
            "labels": ["bag", "coat"], "class_names": '["bag", "coat"]',
            "config": '{"preset": "mmlop", "epochs": 5}'}},
        "response": {202: {**ADAPTATION_EXAMPLE, "status": "queued", "progress": None,
                           "started_at": None, "attempt": 0}},
        "problems": {409: ["quota-exceeded"], 422: _UPLOAD_422 + ["idempotency-key-reused"],
                     429: ["quota-exceeded"],
                     503: ["queue-unavailable", "blob-store-unavailable",
                           "backbone-unavailable"]},
    },
    ("get", "/adaptations/{adaptation_id}"): {"response": {200: ADAPTATION_EXAMPLE}},
    ("get", "/adaptations"): {"response": {200: {"items": [ADAPTATION_EXAMPLE], "total": 1,
                                                 "limit": 20, "offset": 0}}},
    ("get", "/adaptations/{adaptation_id}/checkpoint"): {
        "problems": {409: ["adapter-not-ready"], 503: ["blob-store-unavailable"]}},
    ("post", "/classify/{adapter_id}"): {
        "request": {"application/json": _CLASSIFY_REQUEST},
        "response": {200: CLASSIFY_EXAMPLE},
        "problems": {409: ["adapter-not-ready", "backbone-mismatch", "checkpoint-unusable"],
                     422: ["invalid-image", "invalid-class-name", "invalid-data"],
                     503: _MODEL_503},
    },
    ("post", "/classify/zeroshot"): {
        "request": {"application/json": {**_CLASSIFY_REQUEST,
                                         "class_names": ["bag", "coat", "sneaker"]}},
        "response": {200: {**CLASSIFY_EXAMPLE, "adapter_id": "zeroshot"}},
        "problems": {422: ["invalid-image", "invalid-class-name"], 503: _MODEL_503},
    },
    ("get", "/adaptations/{adaptation_id}/deliveries"): {"response": {200: {"items": [
        {"event_id": "msg_5b0f3c9d2a7e4e0c8f1d6a3b9c2e7f10", "type": "adaptation.succeeded",
         "attempt": 1, "attempted_at": "2026-11-29T21:09:40.102Z", "status_code": 503,
         "error": "HTTP 503: busy", "duration_ms": 41.7, "next_retry_s": 7.3},
        {"event_id": "msg_5b0f3c9d2a7e4e0c8f1d6a3b9c2e7f10", "type": "adaptation.succeeded",
         "attempt": 2, "attempted_at": "2026-11-29T21:09:47.450Z", "status_code": 200,
         "error": None, "duration_ms": 38.2, "next_retry_s": None}]}}},
    ("post", "/adaptations/{adaptation_id}/deliveries/{event_id}/redeliver"): {
        "problems": {503: ["queue-unavailable"]}},
    ("get", "/webhooks/secret"): {"response": {200: {
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "created_at": "2026-11-29T20:00:00Z",
        "previous_expires_at": None}}},
    ("post", "/keys"): {"request": {"application/json": {"name": "ci"}}},
    ("post", "/keys/{key_id}/rotate"): {"request": {"application/json": {"overlap_s": 3600}}},
}
