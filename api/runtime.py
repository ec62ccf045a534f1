"""Per-process model runtime of the API: the backbone (loaded once, in a background thread),
a ``Predictor`` and a small LRU cache of loaded adapters (invalidated on delete)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from api.problem import ProblemError
from service.backbone import load_configured_backbone
from service.settings import Settings

logger = logging.getLogger(__name__)


class ModelRuntime:
    """Backbone, predictor and adapter cache of one API process (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backbone: Any = None
        self.predictor: Any = None
        self.error: str | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Any] = OrderedDict()
        # One forward at a time: torch already uses all the process's threads.
        self.infer_lock = threading.Lock()

    def start(self) -> None:
        """Start loading the backbone in a daemon thread (returns immediately)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="backbone-loader", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        try:
            from mmlop_core import Predictor

            self.backbone = load_configured_backbone(self.settings)
            self.predictor = Predictor(self.backbone)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and 503s
            logger.exception("backbone failed to load")
            self.error = f"{exc.__class__.__name__}: {exc}"
        finally:
            self._ready.set()

    @property
    def loaded(self) -> bool:
        """True once the backbone is loaded and usable."""
        return self._ready.is_set() and self.predictor is not None

    def wait(self, timeout: float = 120.0) -> None:
        """Block until the backbone is loaded; 503 problem if it failed or takes too long."""
        self.start()
        if not self._ready.wait(timeout):
            raise ProblemError(503, "the backbone is still loading; retry shortly",
                               kind="backbone-loading", headers={"Retry-After": "10"})
        if self.predictor is None:
            raise ProblemError(503, f"the backbone could not be loaded: {self.error}",
                               kind="backbone-unavailable")

    def adapter(self, adapter_id: str, directory: Path) -> Any:
        """The loaded adapter ``adapter_id`` (from ``directory``), through the LRU cache."""
        with self._lock:
            if adapter_id in self._cache:
                self._cache.move_to_end(adapter_id)
                return self._cache[adapter_id]
        from mmlop_core import load_adapter

        adapter = load_adapter(directory, self.backbone)
        with self._lock:
            self._cache[adapter_id] = adapter
            self._cache.move_to_end(adapter_id)
            while len(self._cache) > self.settings.adapter_cache_size:
                self._cache.popitem(last=False)
        return adapter

    def invalidate(self, adapter_id: str) -> None:
        """Drop ``adapter_id`` from the cache (after delete)."""
        with self._lock:
            self._cache.pop(adapter_id, None)

    @property
    def cached(self) -> int:
        """Number of adapters currently cached."""
        with self._lock:
            return len(self._cache)
