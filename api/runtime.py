"""Per-process model runtime of the API: the backbone (loaded once, in a background thread) and
the :class:`api.engine.InferenceEngine` (cross-tenant batching over the library's predictor + the
byte-budgeted adapter cache, invalidated on delete)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from api.problem import BACKBONE_UNAVAILABLE, ProblemError
from service.backbone import load_configured_backbone
from service.settings import Settings

logger = logging.getLogger(__name__)


class ModelRuntime:
    """Backbone and inference engine of one API process (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backbone: Any = None
        self.error: str | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.engine: Any = None  # api.engine.InferenceEngine once the backbone is loaded

    def start(self) -> None:
        """Start loading the backbone in a daemon thread (returns immediately)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="backbone-loader", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        try:
            from api.engine import InferenceEngine

            self.backbone = load_configured_backbone(self.settings)

            st = self.settings
            self.engine = InferenceEngine(
                self.backbone, max_batch_images=st.max_batch_images, max_wait_ms=st.max_wait_ms,
                queue_size=st.engine_queue_size, batching=st.batching,
                cache_bytes=st.adapter_cache_bytes, max_adapters=st.adapter_cache_size,
                bf16=st.inference_precision == "bf16", texts_per_step=st.open_vocabulary_texts_per_step)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and 503s
            from mmlop_core import MMLoPError
            if isinstance(exc, MMLoPError):  # expected configuration problem: one line, no traceback
                logger.error("backbone failed to load: %s", exc)
            else:
                logger.exception("backbone failed to load")
            self.error = f"{exc.__class__.__name__}: {exc}"
        finally:
            self._ready.set()

    @property
    def loaded(self) -> bool:
        """True once the backbone is loaded and usable."""
        return self._ready.is_set() and self.engine is not None

    @property
    def failed(self) -> bool:
        """True once loading has finished without a usable backbone (``error`` says why)."""
        return self._ready.is_set() and self.engine is None

    def wait(self, timeout: float = 120.0) -> None:
        """Block until the backbone is loaded; 503 problem if it failed or takes too long."""
        self.start()
        if not self._ready.wait(timeout):
            raise ProblemError(503, "the backbone is still loading; retry shortly",
                               kind="backbone-loading", headers={"Retry-After": "10"})
        if self.engine is None:
            raise ProblemError(503, BACKBONE_UNAVAILABLE, kind="backbone-unavailable")

    def invalidate(self, adapter_id: str) -> None:
        """Drop ``adapter_id`` (and its open-vocabulary features) from the cache (after delete)."""
        if self.engine is not None:
            self.engine.cache.invalidate(adapter_id)

    @property
    def cached(self) -> int:
        """Number of adapters currently cached."""
        return self.engine.cache.adapters if self.engine is not None else 0
