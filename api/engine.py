"""Inference engine of one API process: cross-tenant dynamic batching over one frozen backbone.

MMLOP.md section 6: vision prompts are per-row tensors, so one batch may mix images of many
adapters. Requests for any adapters put their preprocessed images (one row each) into one bounded
queue; a single batcher task forms a batch of up to ``max_batch_images`` rows, waiting at most
``max_wait_ms`` after the oldest row arrived, runs one prompted vision forward with per-row prompts
in a dedicated model thread (torch releases the GIL), and scores each row against its own
adapter's class features. Decoding and preprocessing run in the request's thread pool, in
parallel with the forward of the previous batch.

Adapters live in :class:`AdapterCache`: an LRU with a byte budget on the device, loaded from the
blob store on first use in a loader thread (single-flight per adapter, never blocking the batcher
or other adapters' requests), invalidated on delete. Open-vocabulary class features are cached in
the same budget, keyed by (adapter, class-name list).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from api.problem import ProblemError

logger = logging.getLogger(__name__)


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


@dataclass(eq=False)
class ResidentAdapter:
    """One adapter held on the device.

    Attributes:
        adapter_id: the adaptation id (cache key).
        adapter: :class:`mmlop_core.Adapter` whose prompt factors, class features (C, D) fp32
            and image drift (D,) live on the backbone's device.
        nbytes: bytes of its tensors (low-rank prompt factors + class features + drift); the
            full (J, n, d) prompts are expanded per batch and are not kept.
    """

    adapter_id: str
    adapter: Any
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
    ``("v", adapter_id, names)`` (FloatTensor (C, D) class features for the class list
    ``names``). The least recently used entries are evicted while the total exceeds
    ``max_bytes`` or more than ``max_adapters`` adapters are held; the entry just added is never
    evicted. Thread-safe; the async methods must run on one event loop.

    Args:
        load: ``load(directory) -> Adapter`` on the device (runs in a loader thread); raises
            ``mmlop_core.CheckpointError`` / ``BackboneMismatchError`` for bad checkpoints.
        max_bytes: device byte budget.
        max_adapters: most adapters held at once.
        loader_threads: threads reading checkpoints concurrently.
    """

    def __init__(self, load: Callable[[Path], Any], max_bytes: int, max_adapters: int = 1 << 30,
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

    async def _single_flight(self, key: tuple, compute: Callable[[], Any], executor: Any) -> Any:
        fut = self._loading.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(executor, compute)
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

        def compute() -> ResidentAdapter:
            t0 = time.perf_counter()
            try:
                adapter = self._load_fn(directory)
            except Exception:
                self.stats.load_errors += 1
                raise
            p = adapter.prompts
            nbytes = sum(_nbytes(t) for t in p.parameters()) + _nbytes(adapter.class_features) \
                + _nbytes(adapter.image_drift)
            resident = ResidentAdapter(adapter_id, adapter, nbytes)
            self.stats.loads += 1
            self.stats.load_seconds += time.perf_counter() - t0
            self._insert(key, resident, nbytes, gen)
            return resident

        return await self._single_flight(key, compute, self._pool)

    async def class_features(self, resident: ResidentAdapter, names: tuple[str, ...],
                             compute: Callable[[], torch.Tensor], executor: Any) -> torch.Tensor:
        """Class features (C, D) of ``resident`` for the class list ``names`` (open vocabulary),
        computed once by ``compute()`` in ``executor`` and cached within the byte budget."""
        key = ("v", resident.adapter_id, names)
        hit = self._lookup(key)
        if hit is not None:
            self.stats.vocab_hits += 1
            return hit
        self.stats.vocab_misses += 1
        with self._lock:
            gen = self._gen.get(resident.adapter_id, 0)

        def run() -> torch.Tensor:
            feats = compute()
            self._insert(key, feats, _nbytes(feats), gen)
            return feats

        return await self._single_flight(key, run, executor)

    def close(self) -> None:
        """Stop the loader threads (pending loads finish)."""
        self._pool.shutdown(wait=False)


@dataclass(eq=False)
class _Row:
    """One image waiting for the batcher."""

    request: int  # request sequence number (batching off keeps a request's rows together)
    pixels: torch.Tensor  # (3, H, W) fp32, CPU
    resident: ResidentAdapter
    class_names: list[str]
    class_features: torch.Tensor  # (C, D) fp32 on the device, unit rows
    top_k: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class EngineStats:
    """Counters of the batcher since the process started."""

    batches: int = 0
    images: int = 0
    rejected: int = 0  # requests refused with 503 because the queue was full
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
    """

    def __init__(self, backbone: Any, max_batch_images: int = 32, max_wait_ms: float = 5.0,
                 queue_size: int = 512, batching: bool = True, cache_bytes: int = 256 << 20,
                 max_adapters: int = 1 << 30, bf16: bool = False) -> None:
        from mmlop_core import load_adapter

        self.backbone = backbone
        self.max_batch_images = max_batch_images
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.batching = batching
        self.bf16 = bf16 and backbone.device.type == "cuda"
        self.stats = EngineStats()
        self.cache = AdapterCache(lambda d: self._to_device(load_adapter(d, backbone)), cache_bytes, max_adapters)
        self._rows: deque[_Row] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-forward")
        self._seq = itertools.count()

    def _to_device(self, adapter: Any) -> Any:
        dev = self.backbone.device
        adapter.prompts.to(dev)
        adapter.class_features = adapter.class_features.to(dev).float()
        if adapter.image_drift is not None:
            adapter.image_drift = adapter.image_drift.to(dev).float()
        return adapter

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
        """
        from mmlop_core.features import served_class_features

        self._ensure_started()
        n = int(pixels.shape[0])
        self._check_room(n)
        resident = await self.cache.get(adapter_id, directory)
        adapter = resident.adapter
        names = None if class_names is None else tuple(c.strip() for c in class_names)
        if names is None or list(names) == adapter.class_names:
            feats, names_list = adapter.class_features, list(adapter.class_names)
        else:
            if not all(names) or len(set(names)) != len(names):
                from mmlop_core import DataError

                raise DataError("class_names must be distinct non-empty strings")

            def compute() -> torch.Tensor:
                with torch.no_grad():
                    tp = adapter.text_prompts()
                    return served_class_features(self.backbone, list(names), adapter.config, tp).float()

            feats = await self.cache.class_features(resident, names, compute, self._model)
            names_list = list(names)
        self._check_room(n)  # the queue may have filled while the adapter loaded
        loop = asyncio.get_running_loop()
        seq = next(self._seq)
        futures = []
        for i in range(n):
            fut = loop.create_future()
            self._rows.append(_Row(seq, pixels[i], resident, names_list, feats, top_k, fut))
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
        """One prompted vision forward per prompt shape (normally one) for the whole batch."""
        from mmlop_core import Prediction
        from mmlop_core.config import DriftMode
        from mmlop_core.encoders import encode_image

        t0 = time.perf_counter()
        model = self.backbone.model
        dev = self.backbone.device
        pixels = torch.stack([r.pixels for r in batch]).to(dev)  # (B, 3, H, W)
        adapters = [r.resident.adapter for r in batch]
        unique: dict[int, Any] = {id(a): a for a in adapters}
        prompts = {k: (a.vision_prompts() if a.config.vision_depth else None) for k, a in unique.items()}
        groups: dict[Any, list[int]] = {}
        for i, a in enumerate(adapters):
            p = prompts[id(a)]
            groups.setdefault(None if p is None else tuple(p.shape), []).append(i)
        feats = torch.empty(len(batch), self.backbone.embed_dim, device=dev)
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        for shape, idx in groups.items():
            px = pixels if len(idx) == len(batch) else pixels[idx]
            if shape is None:
                with autocast:
                    out = encode_image(model, px)
            else:
                ids = [id(adapters[i]) for i in idx]
                if len(set(ids)) == 1:
                    rows = prompts[ids[0]]  # (J, n, d_v), shared by the group
                else:
                    order = {k: j for j, k in enumerate(dict.fromkeys(ids))}
                    stack = torch.stack([prompts[k] for k in order])  # (A, J, n, d_v)
                    rows = stack[torch.tensor([order[k] for k in ids], device=stack.device)]  # (b, J, n, d_v)
                with autocast:
                    out = encode_image(model, px, rows)
            feats[idx] = out.float()
        feats = F.normalize(feats, dim=-1)  # (B, D)
        drift = [a.image_drift if a.config.drift in (DriftMode.IMAGE, DriftMode.BOTH) else None for a in adapters]
        if any(d is not None for d in drift):  # image-side UDC (MMLOP.md section 4)
            delta = torch.stack([d if d is not None else torch.zeros_like(feats[0]) for d in drift])
            feats = F.normalize(feats - delta, dim=-1)
        scale = model.logit_scale.exp().float()
        by_feats: dict[int, list[int]] = {}
        for i, r in enumerate(batch):
            by_feats.setdefault(id(r.class_features), []).append(i)
        out_rows: list[list[Any]] = [[] for _ in batch]
        for idx in by_feats.values():
            r0 = batch[idx[0]]
            probs = (scale * feats[idx] @ r0.class_features.t()).softmax(dim=-1).cpu()  # (b, C)
            if not bool(torch.isfinite(probs).all()):
                from mmlop_core import NonFiniteOutputError
                logger.error("non-finite scores for adapter batch of %d images: refusing to serve them", len(idx))
                raise NonFiniteOutputError("the model produced non-finite scores (NaN or infinity); the cause "
                                           "is logged")
            for j, i in enumerate(idx):
                k = min(batch[i].top_k, probs.shape[-1])
                vals, top = probs[j].topk(k)
                out_rows[i] = [Prediction(r0.class_names[t], float(v)) for v, t in zip(vals.tolist(), top.tolist())]
        self.stats.batches += 1
        self.stats.images += len(batch)
        self.stats.adapters_per_batch += len(unique)
        self.stats.forward_seconds += time.perf_counter() - t0
        return out_rows
