"""JSON request bodies read under their own byte limit (``upload_json_max_bytes``).

A JSON body is parsed whole in memory: the text, the parsed strings and the decoded images
together take about 2.5 times the body (measured: 65 MB of base64 images raised the API's RSS
by ~160 MB per request), so JSON gets a smaller limit than the streamed multipart forms
(``upload_max_bytes``). Past it the answer is a 413 problem+json that points to multipart (or an
archive); a declared ``Content-Length`` is checked before any byte is read, and a chunked or
lying body is counted while it arrives, so at most the limit plus one chunk is ever held.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request

from api.bounds import parse_json_body
from api.problem import ProblemError
from api.schemas import inline_schema

ModelT = TypeVar("ModelT", bound=BaseModel)


def too_large(limit: int, advice: str) -> ProblemError:
    """The 413 ``too-large`` problem (field ``body``) of a JSON body over ``limit`` bytes."""
    return ProblemError(413, f"a JSON body may hold at most {limit} bytes; {advice}",
                        kind="too-large", field="body")


async def read_json_body(request: Request, limit: int, advice: str) -> bytes:
    """The raw body of ``request`` (at most ``limit`` bytes).

    Args:
        request: a request whose body is JSON.
        limit: most bytes accepted (``Settings.upload_json_max_bytes``).
        advice: what to send instead, appended to the 413 detail.

    Raises:
        ProblemError: 413 ``too-large`` (field ``body``) when ``Content-Length`` declares more
            than ``limit`` bytes (before reading) or the body received passes it.
    """
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(limit, advice)
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(limit, advice)
        chunks.append(chunk)
    return b"".join(chunks)


SMALL_BODY_MAX_BYTES = 1024 * 1024  # PATCH and /keys bodies: a name and metadata, far below


def model_body(model: type[ModelT], *, required: bool = True
               ) -> tuple[Callable[[Request], Awaitable[ModelT]], dict[str, Any]]:
    """A dependency reading a small JSON body into ``model`` with the rules every JSON body
    follows (:func:`api.bounds.parse_json_body`: the same "not valid JSON" answer, member names
    given once, no lone surrogates, bounded integers, 422 naming the member), and the
    ``openapi_extra`` that documents the body.

    Args:
        model: the pydantic model of the body.
        required: when False an empty body reads as ``model()`` (all defaults).

    Returns:
        (dependency for ``Depends``, ``openapi_extra`` with the ``requestBody``).
    """
    async def dependency(request: Request) -> ModelT:
        raw = await read_json_body(request, SMALL_BODY_MAX_BYTES, "this body holds only a few "
                                   "short fields")
        if not raw.strip() and not required:
            return model()
        return parse_json_body(raw, model)

    extra = {"requestBody": {"required": required, "content": {
        "application/json": {"schema": inline_schema(model)}}}}
    return dependency, extra
