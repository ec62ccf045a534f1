"""The served OpenAPI document (``/openapi.json``), completed from route traits.

FastAPI documents only success answers and its own ``HTTPValidationError``. ``install(app)``
replaces ``app.openapi`` with a builder that, for every operation, adds what the service really
does, derived from each operation's traits so that new routes are documented without
copy-paste:

- authenticated (``security``, which ``api.deps.get_tenant``'s HTTP bearer scheme adds): 401 ``unauthorized``, 429 ``rate-limited``/``auth-rate-limited``, 503 ``database-unavailable``;
- a path parameter: 404 ``not-found``; any parameter or body: 422 ``validation-error`` (in place
  of ``HTTPValidationError``); a hand-written request body (uploads): 413 ``too-large`` and 415
  ``unsupported-media-type``;
- kinds a route declares with ``openapi_extra={"x-problems": {status: [kind, ...]}}`` and those
  listed per operation in ``api/openapi_examples.py`` (with the request and answer examples).

Every error is the ``Problem`` schema under ``application/problem+json`` (RFC 9457, as built by
``api/problem.py``); each response lists its kinds, the last segment of ``type`` and ``kind``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.openapi_examples import OPERATIONS
from api.problem import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, status_title

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; every error answer of the service is one. Members "
                   "beyond these may be added.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "description": f"{PROBLEM_BASE}<kind>, or about:blank",
                 "examples": [PROBLEM_BASE + "not-found"]},
        "kind": {"type": "string", "description": "the problem kind (last segment of `type`); "
                 "what a program should branch on", "examples": ["not-found"]},
        "title": {"type": "string", "description": "the HTTP status's phrase"},
        "status": {"type": "integer", "description": "the HTTP status code"},
        "detail": {"type": "string", "description": "what went wrong, for a person"},
        "instance": {"type": "string", "description": "the request's path"},
        "field": {"type": ["string", "null"], "description": "the input at fault, e.g. "
                  "`images[3] (cat.png)`, `config.train.epochs`, `Idempotency-Key`"},
        "reason": {"type": "string", "description": "a finer reason: the job status of "
                   "`adapter-not-ready`, the quota of `quota-exceeded`"},
        "limit": {"type": "integer", "description": "`quota-exceeded`: the quota"},
        "used": {"type": "integer", "description": "`quota-exceeded`: the amount in use"},
        "errors": {"type": "array", "description": "`validation-error` from schema checks: "
                   "every error found", "items": {
                       "type": "object", "properties": {
                           "loc": {"type": "array", "items": {"type": "string"}},
                           "msg": {"type": "string"}, "type": {"type": "string"}}}},
    },
    "additionalProperties": True,
}

_BODY_METHODS = {"post", "put", "patch"}
_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _trait_problems(operation: dict[str, Any], method: str) -> dict[int, list[str]]:
    """Problem kinds per status that the operation's traits imply."""
    out: dict[int, list[str]] = {}
    if operation.get("security"):
        out[401] = ["unauthorized"]
        out[429] = ["rate-limited", "auth-rate-limited"]
        out[503] = ["database-unavailable"]
    params = operation.get("parameters", [])
    if any(p.get("in") == "path" for p in params):
        out[404] = ["not-found"]
    if params or "requestBody" in operation:
        out[422] = ["validation-error"]
    if method in _BODY_METHODS and "multipart/form-data" in operation.get(
            "requestBody", {}).get("content", {}):
        out[413] = ["too-large"]  # uploads: the streamed size limits
        out[415] = ["unsupported-media-type"]
    return out


def _merge(into: dict[int, list[str]], more: dict[Any, list[str]]) -> None:
    for status, kinds in more.items():
        have = into.setdefault(int(status), [])
        have += [k for k in kinds if k not in have]


def _problem_response(status: int, kinds: list[str], path: str) -> dict[str, Any]:
    title = status_title(status)
    listed = ", ".join(f"`{k}`" for k in kinds) or "see the description"
    examples = {kind: {"value": {
        "type": PROBLEM_BASE + kind, "kind": kind, "title": title, "status": status,
        "detail": f"(what went wrong: {kind})", "instance": path}} for kind in kinds}
    response: dict[str, Any] = {
        "description": f"{title}; problem kinds: {listed}",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"},
                                         "examples": examples}},
    }
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"description": "seconds to wait before retrying",
                                               "schema": {"type": "integer"}}}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"},
                                                    "description": 'Bearer realm="mmlop"'}}
    return response


def _merge_examples(operation: dict[str, Any], extra: dict[str, Any]) -> None:
    """Attach the examples of ``api/openapi_examples.py`` where the operation has that content."""
    for ctype, example in extra.get("request", {}).items():
        content = operation.get("requestBody", {}).get("content", {})
        if ctype in content:
            content[ctype]["example"] = example
    for status, example in extra.get("response", {}).items():
        content = operation.get("responses", {}).get(str(status), {}).get("content", {})
        if "application/json" in content:
            content["application/json"]["example"] = example
    operation["parameters"] = operation.get("parameters", []) + extra.get("parameters", [])


def _complete(operation: dict[str, Any], method: str, path: str) -> None:
    """Add problem responses and examples to one operation (in place)."""
    problems = _trait_problems(operation, method)
    extra = OPERATIONS.get((method, path), {})
    _merge(problems, extra.get("problems", {}))
    _merge(problems, operation.pop("x-problems", {}))
    _merge_examples(operation, extra)
    responses = operation.setdefault("responses", {})
    for code, response in responses.items():  # error answers a route documented by hand
        if code.isdigit() and int(code) >= 400 and "content" not in response:
            _merge(problems, {int(code): []})
    for status in sorted(problems):
        documented = responses.get(str(status), {}).get("description", "Validation Error")
        response = _problem_response(status, problems[status], path)
        if documented != "Validation Error":  # keep a route's own words (FastAPI's 422 aside)
            response["description"] = f"{documented}. {response['description']}"
        responses[str(status)] = response


def build(app: FastAPI) -> dict[str, Any]:
    """The completed OpenAPI document of ``app`` (see the module docstring)."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method in _METHODS:
                _complete(operation, method, path)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    return schema


def install(app: FastAPI) -> None:
    """Serve :func:`build`'s document as ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
