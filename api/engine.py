"""Inference engine of one API process: cross-tenant dynamic batching over one frozen backbone.

docs/METHOD.md section 6: vision prompts are per-row tensors, so one batch may mix images of many
adapters. Requests for any adapters put their preprocessed images (one row each) into one bounded
queue; a single batcher task forms a batch of up to ``max_batch_images`` rows, waiting at most
``max_wait_ms`` after the oldest row arrived, runs one prompted vision forward with per-row prompts
in a dedicated model thread (torch releases the GIL), and scores each row against its own
adapter's class features. Decoding and preprocessing run in the request's thread pool, in
parallel with the forward of the previous batch.

The forward and the scoring are the library's (:meth:`mmlop_core.Predictor.rank_served`): the
engine only decides which rows share a forward. Adapters live in :class:`AdapterCache`: an LRU
with a byte budget on the device, loaded from the blob store on first use in a loader thread
(single-flight per adapter, never blocking the batcher or other adapters' requests), invalidated
on delete. Open-vocabulary class features are cached in the same budget, keyed by (adapter, class
set) whatever the order of the names; they are computed in steps of about ``texts_per_step``
texts on the model thread, each step queued behind the image batches waiting then, so a long
class list delays other tenants by one step at a time, not by the whole list.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from api.problem import ProblemError

logger = logging.getLogger(__name__)


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


@dataclass(eq=False)
class ResidentAdapter:
    """One adapter held on the device.

    Attributes:
        adapter_id: the adaptation id (cache key).
        adapter: :class:`mmlop_core.Adapter` whose prompt factors live on the backbone's device
            (open-vocabulary class features are computed from them).
        served: :class:`mmlop_core.ServedClasses` for its trained classes (class features
            (C, D) fp32, expanded vision prompts, image drift), on the device.
        nbytes: bytes of its tensors (prompt factors + ``served``).
    """

    adapter_id: str
    adapter: Any
    served: Any
    nbytes: int


@dataclass
class CacheStats:
    """Counters of the adapter cache since the process started."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    loads: int = 0
    load_errors: int = 0
    load_seconds: float = 0.0  # total wall seconds spent loading from the store
    vocab_hits: int = 0
    vocab_misses: int = 0


class AdapterCache:
    """LRU of adapters and open-vocabulary class features within a device byte budget.

    Entries are keyed ``("a", adapter_id)`` (a :class:`ResidentAdapter`) and
    ``("v", adapter_id, names)`` (:class:`mmlop_core.ServedClasses` for the sorted class names
    ``names``). The least recently used entries are evicted while the total exceeds
    ``max_bytes`` or more than ``max_adapters`` adapters are held; the entry just added is never
    evicted. Thread-safe; the async methods must run on one event loop.

    Args:
        load: ``load(adapter_id, directory) -> ResidentAdapter`` (runs in a loader thread); raises
            ``mmlop_core.CheckpointError`` / ``BackboneMismatchError`` for bad checkpoints.
        max_bytes: device byte budget.
        max_adapters: most adapters held at once.
        loader_threads: threads reading checkpoints concurrently.
    """

    def __init__(self, load: Callable[[str, Path], ResidentAdapter], max_bytes: int, max_adapters: int = 1 << 30,
                 loader_threads: int = 4) -> None:
        self._load_fn = load
        self.max_bytes = max_bytes
        self.max_adapters = max_adapters
        self.stats = CacheStats()
        self._entries: OrderedDict[tuple, Any] = OrderedDict()
        self._sizes: dict[tuple, int] = {}
        self._keys_of: dict[str, set[tuple]] = {}
        self._bytes = 0
        self._adapters = 0
        self._lock = threading.Lock()
        self._gen: dict[str, int] = {}
        self._loading: dict[tuple, asyncio.Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=loader_threads, thread_name_prefix="adapter-loader")

    # ---- bookkeeping (under self._lock) --------------------------------------------------------
    def _lookup(self, key: tuple) -> Any:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def _insert(self, key: tuple, value: Any, nbytes: int, gen: int) -> bool:
        with self._lock:
            if self._gen.get(key[1], 0) != gen:
                return False  # invalidated while loading
            if key in self._entries:
                self._drop(key)
            self._entries[key] = value
            self._sizes[key] = nbytes
            self._keys_of.setdefault(key[1], set()).add(key)
            self._bytes += nbytes
            self._adapters += key[0] == "a"
            # the new entry is last in LRU order, so it is never the one evicted
            while (self._bytes > self.max_bytes or self._adapters > self.max_adapters) and len(self._entries) > 1:
                self._drop(next(iter(self._entries)))
                self.stats.evictions += 1
            return True

    def _drop(self, key: tuple) -> None:
        self._entries.pop(key)
        self._bytes -= self._sizes.pop(key)
        self._adapters -= key[0] == "a"
        keys = self._keys_of.get(key[1])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_of[key[1]]

    # ---- public ----------------------------------------------------------------------------------
    def invalidate(self, adapter_id: str) -> None:
        """Forget ``adapter_id`` and its open-vocabulary features (after delete); a load in flight
        is not stored. Callable from any thread."""
        with self._lock:
            self._gen[adapter_id] = self._gen.get(adapter_id, 0) + 1
            for key in list(self._keys_of.get(adapter_id, ())):
                self._drop(key)

    @property
    def bytes(self) -> int:
        """Bytes of all cached tensors."""
        with self._lock:
            return self._bytes

    @property
    def adapters(self) -> int:
        """Number of adapters cached."""
        with self._lock:
            return self._adapters

    def __contains__(self, adapter_id: str) -> bool:
        with self._lock:
            return ("a", adapter_id) in self._entries

    async def _single_flight(self, key: tuple, compute: Callable[[], Awaitable[Any]]) -> Any:
        fut = self._loading.get(key)
        if fut is None:
            fut = asyncio.ensure_future(compute())
            self._loading[key] = fut
            fut.add_done_callback(lambda _f, k=key: self._loading.pop(k, None))
        return await asyncio.shield(fut)

    async def get(self, adapter_id: str, directory: Path) -> ResidentAdapter:
        """The resident adapter ``adapter_id``, loaded from ``directory`` on a miss.

        Concurrent misses for one adapter share one load; other adapters' requests and the
        batcher keep running meanwhile.

        Raises:
            mmlop_core.CheckpointError, BackboneMismatchError: bad or foreign checkpoint.
        """
        key = ("a", adapter_id)
        hit = self._lookup(key)
        if hit is not None:
            self.stats.hits += 1
            return hit
        self.stats.misses += 1
        with self._lock:
            gen = self._gen.get(adapter_id, 0)

        def load() -> ResidentAdapter:
            t0 = time.perf_counter()
            try:
                resident = self._load_fn(adapter_id, directory)
            except Exception:
                self.stats.load_errors += 1
                raise
            self.stats.loads += 1
            self.stats.load_seconds += time.perf_counter() - t0
            self._insert(key, resident, resident.nbytes, gen)
            return resident

        return await self._single_flight(key, lambda: asyncio.get_running_loop().run_in_executor(self._pool, load))

    async def class_features(self, resident: ResidentAdapter, names: tuple[str, ...],
                             compute: Callable[[], Awaitable[Any]]) -> Any:
        """:class:`mmlop_core.ServedClasses` of ``resident`` for the sorted class names ``names``
        (open vocabulary), computed once by the coroutine ``compute()`` and cached within the
        byte budget."""
        key = ("v", resident.adapter_id, names)
        hit = self._lookup(key)
        if hit is not None:
            self.stats.vocab_hits += 1
            return hit
        self.stats.vocab_misses += 1
        with self._lock:
            gen = self._gen.get(resident.adapter_id, 0)

        async def run() -> Any:
            served = await compute()
            self._insert(key, served, served.nbytes, gen)
            return served

        return await self._single_flight(key, run)

    def close(self) -> None:
        """Stop the loader threads (pending loads finish)."""
        self._pool.shutdown(wait=False)


@dataclass(eq=False)
class _Row:
    """One image waiting for the batcher."""

    request: int  # request sequence number (batching off keeps a request's rows together)
    pixels: torch.Tensor  # (3, H, W) fp32, CPU
    resident: ResidentAdapter
    served: Any  # mmlop_core.ServedClasses the row is scored against
    top_k: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class EngineStats:
    """Counters of the batcher since the process started."""

    batches: int = 0
    images: int = 0
    rejected: int = 0  # requests refused with 503 because the queue was full
    failed_batches: int = 0  # forwards that raised (e.g. non-finite scores)
    forward_seconds: float = 0.0
    adapters_per_batch: int = 0  # sum over batches of distinct adapters (mean = / batches)


class InferenceEngine:
    """Dynamic cross-tenant batcher over one backbone (see the module docstring).

    Args:
        backbone: :class:`mmlop_core.Backbone` (frozen, on its device).
        max_batch_images: rows per forward.
        max_wait_ms: longest wait (milliseconds) after the oldest waiting row for a batch to fill.
        queue_size: most images waiting; beyond it :meth:`classify` raises a 503 problem with
            ``Retry-After``.
        batching: False runs each request's images as their own batch (for comparison).
        cache_bytes: device byte budget of the :class:`AdapterCache`.
        max_adapters: most adapters cached.
        bf16: run the vision forward under bf16 autocast (CUDA only; ignored on CPU).
        texts_per_step: texts per model-thread step when computing open-vocabulary class
            features (:func:`mmlop_core.features.served_class_features_steps`).
    """

    def __init__(self, backbone: Any, max_batch_images: int = 32, max_wait_ms: float = 5.0,
                 queue_size: int = 512, batching: bool = True, cache_bytes: int = 256 << 20,
                 max_adapters: int = 1 << 30, bf16: bool = False, texts_per_step: int = 256) -> None:
        from mmlop_core import Predictor

        self.backbone = backbone
        self.texts_per_step = texts_per_step
        self.max_batch_images = max_batch_images
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.batching = batching
        self.bf16 = bf16 and backbone.device.type == "cuda"
        self.stats = EngineStats()
        self.predictor = Predictor(backbone, text_cache_size=0,
                                   autocast_dtype=torch.bfloat16 if self.bf16 else None)
        self.cache = AdapterCache(self._load, cache_bytes, max_adapters)
        # zero-shot class lists are cached under this pseudo adapter (adapter ids are UUIDs)
        self._zeroshot = ResidentAdapter("zeroshot:", None, None, 0)
        self._rows: deque[_Row] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-forward")
        self._seq = itertools.count()

    def _load(self, adapter_id: str, directory: Path) -> ResidentAdapter:
        """Read a checkpoint onto the device with its served tensors (loader thread)."""
        from mmlop_core import load_adapter

        adapter = load_adapter(directory, self.backbone)
        adapter.prompts.to(self.backbone.device)
        with torch.no_grad():
            served = self.predictor.serve(adapter)
        nbytes = sum(_nbytes(t) for t in adapter.prompts.parameters()) + served.nbytes
        return ResidentAdapter(adapter_id, adapter, served, nbytes)

    async def classify_zeroshot(self, pixels: torch.Tensor, top_k: int, class_names: Sequence[str]) -> list[list[Any]]:
        """Top-k predictions per image by zero-shot CLIP over ``class_names`` (no adapter).

        The class features (frozen template ensemble, :meth:`mmlop_core.Predictor.zeroshot_steps`)
        are computed in steps on the model thread and cached like open-vocabulary lists; the
        images join the same batches as adapters' images (unprompted rows).

        Raises:
            ProblemError: 503 with ``Retry-After`` when the queue is full.
            mmlop_core.DataError: bad class names.
        """
        self._ensure_started()
        n = int(pixels.shape[0])
        self._check_room(n)
        names = [c.strip() for c in class_names]
        key = tuple(sorted(names))
        served = await self.cache.class_features(self._zeroshot, key, lambda: self._stepped(
            self.predictor.zeroshot_steps(list(key), texts_per_step=self.texts_per_step)))
        served = served.reordered(names)
        return await self._enqueue(self._zeroshot, served, pixels, top_k)

    async def _open_vocabulary(self, resident: ResidentAdapter, names: list[str]) -> Any:
        """ServedClasses of ``resident`` for ``names`` (any order), from the cache or computed
        step by step on the model thread."""
        key = tuple(sorted(names))
        served = await self.cache.class_features(resident, key, lambda: self._stepped(
            self.predictor.serve_steps(resident.adapter, list(key), self.texts_per_step)))
        return served.reordered(names)

    async def _stepped(self, steps: Generator[None, None, Any]) -> Any:
        """Run a step generator one step at a time on the model thread (each step queued behind
        the image batches waiting then); its result."""
        loop = asyncio.get_running_loop()
        while True:
            done, value = await loop.run_in_executor(self._model, _advance, steps)
            if done:
                return value

    # ---- lifecycle -------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._arrived = asyncio.Event()
            self._task = loop.create_task(self._batcher(), name="inference-batcher")

    async def stop(self) -> None:
        """Cancel the batcher; waiting requests fail with a 503 problem."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._rows:
            row = self._rows.popleft()
            if not row.future.done():
                row.future.set_exception(ProblemError(503, "the inference engine stopped", kind="unavailable"))
        self.cache.close()
        self._model.shutdown(wait=False)

    @property
    def queued(self) -> int:
        """Images waiting for a forward."""
        return len(self._rows)

    # ---- requests --------------------------------------------------------------------------------
    def _check_room(self, n: int) -> None:
        if len(self._rows) + n > self.queue_size:
            self.stats.rejected += 1
            raise ProblemError(503, f"the inference queue is full ({len(self._rows)} images waiting); "
                               "retry shortly", kind="overloaded", headers={"Retry-After": "1"})

    async def classify(self, adapter_id: str, directory: Path, pixels: torch.Tensor, top_k: int,
                       class_names: Sequence[str] | None = None) -> list[list[Any]]:
        """Top-k predictions per image for one adapter, batched with other requests.

        Args:
            adapter_id: cache key of the adapter; ``directory`` holds its checkpoint.
            pixels: FloatTensor (k, 3, H, W) from the backbone's preprocess (CPU).
            top_k: labels per image (capped at C).
            class_names: open-vocabulary class list (stripped, distinct), or None.

        Returns:
            k lists of :class:`mmlop_core.Prediction`, best first; equal to
            ``Predictor.classify`` up to float rounding.

        Raises:
            ProblemError: 503 with ``Retry-After`` when the queue is full.
            mmlop_core.CheckpointError, BackboneMismatchError: bad checkpoint.
            mmlop_core.DataError: bad open-vocabulary class names (see ``Predictor.serve``).
            mmlop_core.NonFiniteOutputError: the backbone produced non-finite scores.
        """
        self._ensure_started()
        n = int(pixels.shape[0])
        self._check_room(n)
        resident = await self.cache.get(adapter_id, directory)
        names = None if class_names is None else [c.strip() for c in class_names]
        if names is None or names == resident.served.class_names:
            served = resident.served
        else:
            served = await self._open_vocabulary(resident, names)
        return await self._enqueue(resident, served, pixels, top_k)

    async def _enqueue(self, resident: ResidentAdapter, served: Any, pixels: torch.Tensor,
                       top_k: int) -> list[list[Any]]:
        """Queue one row per image for the batcher and wait for their predictions."""
        n = int(pixels.shape[0])
        self._check_room(n)  # the queue may have filled while the adapter or class features loaded
        loop = asyncio.get_running_loop()
        seq = next(self._seq)
        futures = []
        for i in range(n):
            fut = loop.create_future()
            self._rows.append(_Row(seq, pixels[i], resident, served, top_k, fut))
            futures.append(fut)
        self._arrived.set()  # type: ignore[union-attr]
        return list(await asyncio.gather(*futures))

    # ---- batcher ---------------------------------------------------------------------------------
    def _take(self) -> list[_Row]:
        batch: list[_Row] = []
        first = None
        while self._rows and len(batch) < self.max_batch_images:
            row = self._rows[0]
            if not self.batching and first is not None and row.request != first:
                break
            self._rows.popleft()
            if row.future.done():  # client went away
                continue
            first = row.request if first is None else first
            batch.append(row)
        return batch

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        arrived = self._arrived
        assert arrived is not None
        while True:
            if not self._rows:
                arrived.clear()
                await arrived.wait()
                continue
            if self.batching:
                deadline = self._rows[0].enqueued + self.max_wait_s
                while len(self._rows) < self.max_batch_images:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    arrived.clear()
                    try:
                        await asyncio.wait_for(arrived.wait(), left)
                    except TimeoutError:
                        break
            batch = self._take()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._model, self._forward, batch)
            except Exception as exc:  # noqa: BLE001 - delivered to every request of the batch
                logger.exception("batch of %d images failed", len(batch))
                for row in batch:
                    if not row.future.done():
                        row.future.set_exception(exc)
                continue
            for row, preds in zip(batch, results):
                if not row.future.done():
                    row.future.set_result(preds)

    @torch.no_grad()
    def _forward(self, batch: list[_Row]) -> list[list[Any]]:
        """One batched prompted forward and scoring of the rows, by the library's predictor."""
        t0 = time.perf_counter()
        pixels = torch.stack([r.pixels for r in batch]).to(self.backbone.device)  # (B, 3, H, W)
        try:
            out = self.predictor.rank_served([r.served for r in batch], pixels, [r.top_k for r in batch])
        except Exception:
            self.stats.failed_batches += 1
            raise
        self.stats.batches += 1
        self.stats.images += len(batch)
        self.stats.adapters_per_batch += len({id(r.resident) for r in batch})
        self.stats.forward_seconds += time.perf_counter() - t0
        return out


@torch.no_grad()
def _advance(steps: Generator[None, None, Any]) -> tuple[bool, Any]:
    """Run one step of a step generator: (False, None), or (True, its result) once it ends."""
    try:
        next(steps)
    except StopIteration as stop:
        return True, stop.value
    return False, None
