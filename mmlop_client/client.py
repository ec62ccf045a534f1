"""``Client`` (blocking) and ``AsyncClient`` (asyncio) for the MMLoP adaptation service.

Both share ``_Base``: request building, answer checking and the retry policy; each call is one
HTTP request retried by tenacity on 429/503 answers (after the server's ``Retry-After``, else
exponential backoff with jitter) and on transport errors. Retried POSTs are safe:
``create_adaptation`` always sends an ``Idempotency-Key`` and ``classify`` changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from httpx_sse import EventSource
from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt

from .errors import (MMLoPAPIError, MMLoPConnectionError, MMLoPJobError, MMLoPTimeoutError)
from .events import NO_EVENTS_STATUSES, EventCursor
from .keys import AsyncKeysMixin, KeysMixin
from .webhooks import AsyncWebhooksMixin, WebhooksMixin
from .models import Adaptation, AdaptationEvent, AdaptationList, ClassifyResult
from .progress import ProgressArg, make_observer
from .uploads import ImageInput, TrainingSource, TrainingUpload, image_parts, training_upload

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503})
_USER_AGENT = "mmlop-client/0.1"


class _Base:
    """Configuration, request building and the retry policy shared by both clients."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 120.0,
                 max_retries: int = 5, max_retry_wait: float = 120.0, backoff: float = 0.5) -> None:
        """
        Args:
            base_url: root URL of the API, e.g. ``http://127.0.0.1:8000``.
            api_key: the tenant's API key (``mmlop tenant create``), sent as a Bearer token.
            timeout: seconds for one request to connect, send or read (uploads included).
            max_retries: retries of one call after a 429/503 answer or a transport error.
            max_retry_wait: longest ``Retry-After`` (seconds) honoured; a longer one is raised
                at once as ``MMLoPAPIError`` (``.retry_after`` says how long).
            backoff: first delay (seconds) of the exponential backoff used without ``Retry-After``.
        """
        self.base_url = base_url.rstrip("/")
        self.max_retries, self.max_retry_wait, self.backoff = max_retries, max_retry_wait, backoff
        self._http_kwargs: dict[str, Any] = dict(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": _USER_AGENT})

    # ---- retry policy --------------------------------------------------------------------

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, MMLoPAPIError):
            return exc.status in RETRY_STATUSES and (
                exc.retry_after is None or exc.retry_after <= self.max_retry_wait)
        return isinstance(exc, httpx.TransportError)

    def _delay(self, state: Any) -> float:
        exc = state.outcome.exception()
        if isinstance(exc, MMLoPAPIError) and exc.retry_after is not None:
            return exc.retry_after
        return min(30.0, self.backoff * 2 ** (state.attempt_number - 1)) * random.uniform(0.5, 1.0)

    def _log_retry(self, state: Any) -> None:
        logger.info("retrying in %.1f s (attempt %d of %d): %s", state.next_action.sleep,
                    state.attempt_number + 1, self.max_retries + 1, state.outcome.exception())

    def _retry_kwargs(self) -> dict[str, Any]:
        return dict(stop=stop_after_attempt(self.max_retries + 1), wait=self._delay,
                    retry=retry_if_exception(self._retryable), before_sleep=self._log_retry,
                    reraise=True)

    # ---- requests and answers --------------------------------------------------------------

    @staticmethod
    def _check(resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            raise MMLoPAPIError.from_response(resp.status_code, resp.headers, resp.content)
        return resp

    @staticmethod
    def _create_kwargs(upload: TrainingUpload, idempotency_key: str | None,
                       name: str | None = None,
                       metadata: dict[str, str] | None = None) -> dict[str, Any]:
        data, key = upload.data, upload.idempotency_key
        fields = {"name": name, "metadata": None if metadata is None else json.dumps(metadata)}
        fields = {k: v for k, v in fields.items() if v is not None}
        if fields:  # part of the derived key (calls without them keep theirs)
            data = {**data, **fields}
            key = "mmlop-client-" + hashlib.sha256(
                (key + json.dumps(fields, sort_keys=True)).encode()).hexdigest()
        return dict(files=upload.files, data=data,
                    headers={"Idempotency-Key": idempotency_key or key})

    @staticmethod
    def _classify_kwargs(images: Any, top_k: int, class_names: list[str] | None) -> dict[str, Any]:
        import json

        data: dict[str, Any] = {"top_k": str(top_k)}
        if class_names is not None:
            data["class_names"] = json.dumps(list(class_names))
        return dict(files=image_parts(images), data=data)

    @staticmethod
    def _list_params(limit: int, offset: int, status: str | None, name: str | None = None,
                     metadata: dict[str, str] | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        if name is not None:
            params["name"] = name
        if metadata:
            params["metadata"] = [f"{k}:{v}" for k, v in metadata.items()]
        return params

    def _read_timeout(self, deadline: float | None) -> float:
        """Seconds a stream may stay silent (the server's keep-alives come every 15 s)."""
        left = 60.0 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise MMLoPTimeoutError("the events stream reached its timeout")
        return min(left, 60.0)

    def _stream_failed(self, cursor: EventCursor, exc: Exception, deadline: float | None) -> float:
        """Seconds before the next connection of ``cursor`` after ``exc``; raises what the
        caller must see instead (a non-retryable answer, the timeout, too many failures)."""
        if isinstance(exc, MMLoPAPIError) and not self._retryable(exc):
            raise exc
        if deadline is not None and time.monotonic() >= deadline:
            raise MMLoPTimeoutError("the events stream reached its timeout") from exc
        if isinstance(exc, httpx.TransportError):
            exc = _connection_error(exc, self.base_url)
        return cursor.failed(exc)

    @staticmethod
    def _target(path: str | os.PathLike[str], adaptation_id: str) -> Path:
        target = Path(path)
        return target / f"adapter-{adaptation_id}.zip" if target.is_dir() else target

    @staticmethod
    def _finished(job: Adaptation, raise_on_failure: bool) -> Adaptation:
        if raise_on_failure and job.status != "succeeded":
            raise MMLoPJobError(job)
        return job


def _connection_error(exc: httpx.TransportError, base_url: str) -> MMLoPConnectionError:
    return MMLoPConnectionError(f"cannot reach {base_url}: {exc.__class__.__name__}: {exc}")


def _timed_out(adaptation_id: str, job: Adaptation, timeout: float | None) -> MMLoPTimeoutError:
    return MMLoPTimeoutError(f"adaptation {adaptation_id} still {job.status} after {timeout} s")


def _next_poll_s(adaptation_id: str, job: Adaptation, deadline: float | None, timeout: float | None,
                 poll_interval: float) -> float:
    """Seconds to sleep before ``wait`` polls again (never past the deadline).

    Raises:
        MMLoPTimeoutError: the deadline (``time.monotonic()`` seconds) has passed.
    """
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        raise _timed_out(adaptation_id, job, timeout)
    return poll_interval if left is None else min(poll_interval, left)


class Client(KeysMixin, WebhooksMixin, _Base):
    """Blocking client. Use as a context manager, or call ``close()``.

    Example::

        with Client("http://127.0.0.1:8000", key) as c:
            job = c.wait(c.create_adaptation("photos/").id)
            print(c.classify(job.id, ["shoe.jpg"]).results[0].top)
    """

    @property
    def _http(self) -> httpx.Client:
        if getattr(self, "_client", None) is None:
            self._client = httpx.Client(**self._http_kwargs)
        return self._client

    def close(self) -> None:
        """Close the connection pool."""
        if getattr(self, "_client", None) is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            for attempt in Retrying(**self._retry_kwargs()):
                with attempt:
                    return self._check(self._http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise _connection_error(exc, self.base_url) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def create_adaptation(self, source: TrainingSource, config: dict[str, Any] | None = None,
                          class_names: list[str] | None = None, *,
                          idempotency_key: str | None = None,
                          callback_url: str | None = None, name: str | None = None,
                          metadata: dict[str, str] | None = None) -> Adaptation:
        """Upload labelled photos and start training an adapter (``POST /adaptations``).

        Args:
            source: a folder of class folders (``DIR/<class>/<image>``), a ``.zip`` with that
                layout, or ``[(image path, label), ...]``.
            config: ``{"adapter": {...}, "train": {...}}`` or flat ``{"preset": "mmlop",
                "epochs": 5, "shots": 16, "seed": 1}``; None for the server's defaults.
            class_names: class order (default: the labels, sorted).
            idempotency_key: default: derived from the content (images, labels, config, class
                names), so repeating the same call returns the same adaptation instead of
                training twice; pass another key (e.g. ``str(uuid.uuid4())``) for a new job.
            callback_url: an https URL that gets the signed ``adaptation.succeeded|failed|
                canceled`` event (``webhook_secret()`` verifies it; ``deliveries(id)`` lists
                the attempts). The server refuses non-public addresses (422, ``.field``
                ``callback_url``) unless its operator allowlists them.
            name: a label of at most 100 characters (``list(name=...)`` finds it).
            metadata: at most 50 string keys (letters, digits, ``_.-``) with string values
                (``list(metadata={...})`` finds it). Both are part of the derived key.

        Returns:
            The queued ``Adaptation`` (or the existing one for a repeated key).

        Raises:
            MMLoPInputError: local input unusable. MMLoPAPIError: the server refused it (e.g. 422
            ``invalid-image`` with ``.field``). MMLoPConnectionError: server unreachable.
        """
        with training_upload(source, config, class_names, callback_url) as upload:
            resp = self._request("POST", "/adaptations",
                                 **self._create_kwargs(upload, idempotency_key, name, metadata))
        return Adaptation.from_dict(resp.json())

    def get(self, adaptation_id: str) -> Adaptation:
        """Status, progress (``eta_s``), metrics and error of one adaptation."""
        return Adaptation.from_dict(self._request("GET", f"/adaptations/{adaptation_id}").json())

    def list(self, limit: int = 20, offset: int = 0, status: str | None = None,
             name: str | None = None, metadata: dict[str, str] | None = None) -> AdaptationList:
        """One page of the tenant's adaptations, newest first; ``status`` filters
        (queued | running | succeeded | failed | canceled), ``name`` matches exactly and every
        ``metadata`` key must map to exactly its value."""
        resp = self._request("GET", "/adaptations",
                             params=self._list_params(limit, offset, status, name, metadata))
        return AdaptationList.from_dict(resp.json())

    def delete(self, adaptation_id: str) -> None:
        """Cancel the job if it runs, then delete it with its uploads and checkpoint."""
        self._request("DELETE", f"/adaptations/{adaptation_id}")

    def cancel(self, adaptation_id: str) -> Adaptation:
        """Cancel a queued or running adaptation and keep its record (``canceled``; its uploads
        are freed). Repeating it is harmless. Raises MMLoPAPIError 409 ``not-cancelable`` if it
        already succeeded or failed."""
        return Adaptation.from_dict(
            self._request("POST", f"/adaptations/{adaptation_id}/cancel").json())

    def events(self, adaptation_id: str, *, last_event_id: str | None = None,
               timeout: float | None = None) -> Iterator[AdaptationEvent]:
        """Live status, progress (ETA) and metrics of an adaptation (Server-Sent Events), until
        its terminal event (or ``deleted``); the first event is its current state.

        Reconnects with ``Last-Event-ID`` when the server ends a stream early or the connection
        breaks (``max_retries`` failures in a row at most), so no event repeats; pass the
        ``event_id`` of the last event seen as ``last_event_id`` to resume later.

        Raises:
            MMLoPAPIError (404 for an unknown id), MMLoPConnectionError, MMLoPTimeoutError
            (``timeout`` seconds passed).
        """
        cursor = EventCursor(adaptation_id, last_event_id, self.max_retries)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not cursor.finished:
            try:
                with self._http.stream("GET", cursor.path, **cursor.request_kwargs(
                        self._read_timeout(deadline))) as resp:
                    if resp.status_code == 204:
                        cursor.no_content()
                        return
                    if resp.status_code >= 400:
                        resp.read()
                        self._check(resp)
                    for sse in EventSource(resp).iter_sse():
                        if (event := cursor.event(sse)) is not None:
                            yield event
                delay = 0.0 if cursor.finished else cursor.retry_s
            except (httpx.TransportError, MMLoPAPIError) as exc:
                delay = self._stream_failed(cursor, exc, deadline)
            time.sleep(delay)

    def wait(self, adaptation_id: str, progress: ProgressArg = True, timeout: float | None = None,
             poll_interval: float = 1.0, raise_on_failure: bool = True,
             use_events: bool = True) -> Adaptation:
        """Follow the adaptation until it is succeeded, failed or canceled: through ``events``
        (one request, updates as they happen), or by polling ``get`` when ``use_events`` is
        False or the server has no events endpoint.

        Args:
            progress: True draws a tqdm bar on stderr when it is a terminal (steps, epoch, loss,
                the server's ETA); a callable is called with every ``Adaptation`` seen.
            timeout: seconds to wait at most (None: no limit).
            poll_interval: seconds between polls.
            raise_on_failure: raise ``MMLoPJobError`` unless the job succeeded.

        Raises:
            MMLoPTimeoutError, MMLoPJobError, MMLoPAPIError, MMLoPConnectionError.
        """
        update, close = make_observer(progress, adaptation_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            job = self.get(adaptation_id)
            update(job)
            if use_events and not job.done:
                _next_poll_s(adaptation_id, job, deadline, timeout, poll_interval)
                try:
                    for event in self.events(adaptation_id, timeout=timeout):
                        job = self.get(adaptation_id) if event.event == "deleted" \
                            else event.apply_to(job)
                        update(job)
                except MMLoPTimeoutError as exc:
                    raise _timed_out(adaptation_id, job, timeout) from exc
                except MMLoPAPIError as exc:
                    if exc.status not in NO_EVENTS_STATUSES:
                        raise
            while not job.done:
                time.sleep(_next_poll_s(adaptation_id, job, deadline, timeout, poll_interval))
                job = self.get(adaptation_id)
                update(job)
            return self._finished(job, raise_on_failure)
        finally:
            close()

    def classify(self, adaptation_id: str, images: ImageInput | list[ImageInput], top_k: int = 5,
                 class_names: list[str] | None = None) -> ClassifyResult:
        """Top-k labels of each image (paths, bytes or ``(name, bytes)``), in order.

        ``class_names`` scores these names instead of the trained ones (open vocabulary).
        Raises MMLoPAPIError 409 ``not-ready`` unless the adaptation succeeded.
        """
        resp = self._request("POST", f"/classify/{adaptation_id}",
                             **self._classify_kwargs(images, top_k, class_names))
        return ClassifyResult.from_dict(resp.json())

    def download_checkpoint(self, adaptation_id: str, path: str | os.PathLike[str]) -> Path:
        """Save the adapter zip (accepted by ``mmlop classify``) at ``path`` (a file, or a folder
        to hold ``adapter-<id>.zip``); written to a temp file and renamed. Returns the path."""
        resp = self._request("GET", f"/adaptations/{adaptation_id}/checkpoint")
        target = self._target(path, adaptation_id)
        _write_atomic(target, resp.content)
        return target


class AsyncClient(AsyncKeysMixin, AsyncWebhooksMixin, _Base):
    """asyncio client with the same calls as ``Client`` (each a coroutine). Use
    ``async with AsyncClient(url, key) as c: ...`` or ``await c.aclose()``."""

    @property
    def _http(self) -> httpx.AsyncClient:
        if getattr(self, "_client", None) is None:
            self._client = httpx.AsyncClient(**self._http_kwargs)
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool."""
        if getattr(self, "_client", None) is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            async for attempt in AsyncRetrying(**self._retry_kwargs()):
                with attempt:
                    return self._check(await self._http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise _connection_error(exc, self.base_url) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def create_adaptation(self, source: TrainingSource, config: dict[str, Any] | None = None,
                                class_names: list[str] | None = None, *,
                                idempotency_key: str | None = None,
                                callback_url: str | None = None, name: str | None = None,
                                metadata: dict[str, str] | None = None) -> Adaptation:
        """See ``Client.create_adaptation``."""
        upload = await asyncio.to_thread(training_upload, source, config, class_names,
                                         callback_url)
        with upload:
            resp = await self._request("POST", "/adaptations",
                                       **self._create_kwargs(upload, idempotency_key, name,
                                                             metadata))
        return Adaptation.from_dict(resp.json())

    async def get(self, adaptation_id: str) -> Adaptation:
        """See ``Client.get``."""
        resp = await self._request("GET", f"/adaptations/{adaptation_id}")
        return Adaptation.from_dict(resp.json())

    async def list(self, limit: int = 20, offset: int = 0, status: str | None = None,
                   name: str | None = None,
                   metadata: dict[str, str] | None = None) -> AdaptationList:
        """See ``Client.list``."""
        resp = await self._request("GET", "/adaptations",
                                   params=self._list_params(limit, offset, status, name,
                                                            metadata))
        return AdaptationList.from_dict(resp.json())

    async def delete(self, adaptation_id: str) -> None:
        """See ``Client.delete``."""
        await self._request("DELETE", f"/adaptations/{adaptation_id}")

    async def cancel(self, adaptation_id: str) -> Adaptation:
        """See ``Client.cancel``."""
        resp = await self._request("POST", f"/adaptations/{adaptation_id}/cancel")
        return Adaptation.from_dict(resp.json())

    async def events(self, adaptation_id: str, *, last_event_id: str | None = None,
                     timeout: float | None = None) -> AsyncIterator[AdaptationEvent]:
        """See ``Client.events`` (an async iterator)."""
        cursor = EventCursor(adaptation_id, last_event_id, self.max_retries)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not cursor.finished:
            try:
                async with self._http.stream("GET", cursor.path, **cursor.request_kwargs(
                        self._read_timeout(deadline))) as resp:
                    if resp.status_code == 204:
                        cursor.no_content()
                        return
                    if resp.status_code >= 400:
                        await resp.aread()
                        self._check(resp)
                    async for sse in EventSource(resp).aiter_sse():
                        if (event := cursor.event(sse)) is not None:
                            yield event
                delay = 0.0 if cursor.finished else cursor.retry_s
            except (httpx.TransportError, MMLoPAPIError) as exc:
                delay = self._stream_failed(cursor, exc, deadline)
            await asyncio.sleep(delay)

    async def wait(self, adaptation_id: str, progress: ProgressArg = True,
                   timeout: float | None = None, poll_interval: float = 1.0,
                   raise_on_failure: bool = True, use_events: bool = True) -> Adaptation:
        """See ``Client.wait``."""
        update, close = make_observer(progress, adaptation_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            job = await self.get(adaptation_id)
            update(job)
            if use_events and not job.done:
                _next_poll_s(adaptation_id, job, deadline, timeout, poll_interval)
                try:
                    async for event in self.events(adaptation_id, timeout=timeout):
                        job = await self.get(adaptation_id) if event.event == "deleted" \
                            else event.apply_to(job)
                        update(job)
                except MMLoPTimeoutError as exc:
                    raise _timed_out(adaptation_id, job, timeout) from exc
                except MMLoPAPIError as exc:
                    if exc.status not in NO_EVENTS_STATUSES:
                        raise
            while not job.done:
                await asyncio.sleep(_next_poll_s(adaptation_id, job, deadline, timeout,
                                                 poll_interval))
                job = await self.get(adaptation_id)
                update(job)
            return self._finished(job, raise_on_failure)
        finally:
            close()

    async def classify(self, adaptation_id: str, images: ImageInput | list[ImageInput],
                       top_k: int = 5, class_names: list[str] | None = None) -> ClassifyResult:
        """See ``Client.classify``."""
        kwargs = await asyncio.to_thread(self._classify_kwargs, images, top_k, class_names)
        resp = await self._request("POST", f"/classify/{adaptation_id}", **kwargs)
        return ClassifyResult.from_dict(resp.json())

    async def download_checkpoint(self, adaptation_id: str,
                                  path: str | os.PathLike[str]) -> Path:
        """See ``Client.download_checkpoint``."""
        resp = await self._request("GET", f"/adaptations/{adaptation_id}/checkpoint")
        target = self._target(path, adaptation_id)
        await asyncio.to_thread(_write_atomic, target, resp.content)
        return target


def _write_atomic(target: Path, content: bytes) -> None:
    """Write ``content`` to a temp file beside ``target``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=".adapter-", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
