"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.problem import PROBLEM_MEDIA_TYPE
from service import queue
from service.health import database_status

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database migrated, broker reachable, backbone loaded")
async def readyz(request: Request) -> JSONResponse:
    """200 when every dependency is ready, else 503 problem+json listing the checks."""
    db_ok, db_detail = await run_in_threadpool(database_status)
    broker_ok = await run_in_threadpool(queue.broker_reachable)
    runtime = request.app.state.runtime
    runtime.start()
    backbone_ok = runtime.loaded
    checks = {
        "database": db_detail,
        "broker": "ok" if broker_ok else "unreachable",
        "backbone": "ok" if backbone_ok else (f"failed: {runtime.error}" if runtime.error else "loading"),
    }
    if db_ok and broker_ok and backbone_ok:
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {"type": "https://mmlop.dev/problems/not-ready", "title": "Service Unavailable",
         "status": 503, "detail": "not ready: " + ", ".join(k for k, v in checks.items() if v != "ok"),
         "instance": "/readyz", "checks": checks},
        status_code=503, media_type=PROBLEM_MEDIA_TYPE,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the app's registry."""
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
