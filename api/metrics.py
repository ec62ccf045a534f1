"""Prometheus metrics: request counts and latencies, queue depth, jobs by status, the inference
engine (batches, queue, rejections) and its adapter cache (hits, misses, evictions, bytes)."""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import queue
from service.db import get_sessionmaker
from service.models import Adaptation

logger = logging.getLogger(__name__)


class StateCollector:
    """Gauges read at scrape time: queue depth, jobs by status, adapters cached."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self):  # noqa: ANN201 - prometheus collector protocol
        """Yield the gauge families."""
        depth = GaugeMetricFamily("mmlop_queue_depth", "Training messages waiting in the broker")
        value = queue.queue_depth()
        if value is not None:
            depth.add_metric([], value)
        yield depth
        jobs = GaugeMetricFamily("mmlop_jobs", "Adaptation jobs by status", labels=["status"])
        try:
            with get_sessionmaker()() as session:
                rows = session.execute(
                    select(Adaptation.status, func.count()).where(Adaptation.deleted_at.is_(None))
                    .group_by(Adaptation.status)
                ).all()
            for status, count in rows:
                jobs.add_metric([status], count)
        except Exception:  # noqa: BLE001
            logger.warning("could not count jobs", exc_info=True)
        yield jobs
        cached = GaugeMetricFamily("mmlop_adapters_cached", "Adapters loaded in this process")
        runtime = getattr(self.app.state, "runtime", None)
        cached.add_metric([], runtime.cached if runtime else 0)
        yield cached
        loaded = GaugeMetricFamily("mmlop_backbone_loaded", "1 once the backbone is loaded")
        loaded.add_metric([], 1 if runtime and runtime.loaded else 0)
        yield loaded
        yield from engine_metrics(getattr(runtime, "engine", None))


def engine_metrics(engine: Any):  # noqa: ANN201 - generator of metric families
    """Counters and gauges of the inference engine and its adapter cache (zeros before it exists)."""
    cache = engine.cache.stats if engine is not None else None
    stats = engine.stats if engine is not None else None
    for name, doc, value in (
        ("mmlop_adapter_cache_hits", "Adapter cache hits", cache.hits if cache else 0),
        ("mmlop_adapter_cache_misses", "Adapter cache misses (loads from the store)", cache.misses if cache else 0),
        ("mmlop_adapter_cache_evictions", "Adapter cache evictions (byte budget)", cache.evictions if cache else 0),
        ("mmlop_adapter_cache_load_errors", "Adapter loads that failed", cache.load_errors if cache else 0),
        ("mmlop_adapter_load_seconds", "Seconds spent loading adapters from the store", cache.load_seconds if cache else 0),
        ("mmlop_class_features_cache_hits", "Open-vocabulary class feature cache hits", cache.vocab_hits if cache else 0),
        ("mmlop_class_features_cache_misses", "Open-vocabulary class feature cache misses", cache.vocab_misses if cache else 0),
        ("mmlop_engine_batches", "Batched vision forwards", stats.batches if stats else 0),
        ("mmlop_engine_images", "Images classified by the engine", stats.images if stats else 0),
        ("mmlop_engine_rejected", "Classify requests refused because the queue was full", stats.rejected if stats else 0),
        ("mmlop_engine_forward_seconds", "Seconds in batched forwards", stats.forward_seconds if stats else 0),
    ):
        family = CounterMetricFamily(name, doc)
        family.add_metric([], value)
        yield family
    for name, doc, value in (
        ("mmlop_adapter_cache_bytes", "Device bytes held by the adapter cache", engine.cache.bytes if engine else 0),
        ("mmlop_engine_queue_images", "Images waiting for the engine", engine.queued if engine else 0),
    ):
        family = GaugeMetricFamily(name, doc)
        family.add_metric([], value)
        yield family


class Metrics:
    """The app's registry and request metrics."""

    def __init__(self, app: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mmlop_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("mmlop_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.event_streams = Gauge("mmlop_event_streams", "Open GET /adaptations/{id}/events "
                                   "streams in this process", registry=self.registry)
        self.registry.register(StateCollector(app))


class MetricsMiddleware:
    """Pure ASGI middleware timing each request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status["code"])).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)
