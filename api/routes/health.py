"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import ratelimit
from api.problem import BACKBONE_UNAVAILABLE, PROBLEM_MEDIA_TYPE, ProblemError
from service import queue
from service.health import blob_store_status, database_status

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database migrated, broker and blob store reachable, "
                           "backbone loaded")
async def readyz(request: Request) -> JSONResponse:
    """200 when every dependency is ready, else 503 problem+json listing the checks."""
    db_ok, db_detail = await run_in_threadpool(database_status)
    broker_ok = await run_in_threadpool(queue.broker_reachable)
    blob_ok, blob_detail = await run_in_threadpool(blob_store_status)
    runtime = request.app.state.runtime
    runtime.start()
    backbone_ok = runtime.loaded
    checks = {
        "database": db_detail,
        "broker": "ok" if broker_ok else "unreachable",
        "blob_store": blob_detail,
        # never the loader's exception (server paths): it is in the log (issue 12 D.10)
        "backbone": "ok" if backbone_ok else ("failed: " + BACKBONE_UNAVAILABLE if runtime.failed
                                              else "loading"),
    }
    if db_ok and broker_ok and blob_ok and backbone_ok:
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {"type": "https://mmlop.dev/problems/not-ready", "kind": "not-ready",
         "title": "Service Unavailable",
         "status": 503, "detail": "not ready: " + ", ".join(k for k, v in checks.items() if v != "ok"),
         "instance": "/readyz", "checks": checks},
        status_code=503, media_type=PROBLEM_MEDIA_TYPE,
    )


def _check_metrics_token(request: Request) -> None:
    """401 problem+json unless the request carries ``Bearer <metrics_token>`` (when one is set)."""
    settings = request.app.state.settings
    secret = settings.metrics_token
    token = secret.get_secret_value() if secret is not None else ""
    if not token:
        return
    address = request.client.host if request.client else "unknown"
    ratelimit.check_auth_failures(address, settings)  # wrong tokens count like wrong API keys
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        ratelimit.record_auth_failure(address, settings)
        raise ProblemError(401, "GET /metrics needs 'Authorization: Bearer <token>' with the "
                           "token of MMLOP_METRICS_TOKEN", kind="unauthorized",
                           headers={"WWW-Authenticate": 'Bearer realm="mmlop-metrics"'})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the app's registry (service-wide figures, no tenant data).

    Requires ``Authorization: Bearer <MMLOP_METRICS_TOKEN>`` when that setting is set.
    """
    _check_metrics_token(request)
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
