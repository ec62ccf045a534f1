"""FastAPI application factory: ``uvicorn api.main:app`` or ``api.main:create_app()``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import console, openapi, problem
from api.metrics import Metrics, MetricsMiddleware
from api.request_id import RequestIdMiddleware
from api.routes import adaptations, classify, docs, events, health, keys, lifecycle
from api.routes import webhooks
from api.runtime import ModelRuntime
from api.uploads import BodyLimitMiddleware
from service.logs import configure_logging
from service.settings import get_settings

logger = logging.getLogger(__name__)

_DESCRIPTION = (
    "Few-shot adaptation of a frozen CLIP backbone: upload labelled photos, train an MMLoP "
    "adapter, classify.\n\nAuthenticate with `Authorization: Bearer <api key>` (the Authorize "
    "button); every error is `application/problem+json` (schema `Problem`), whose `kind` says "
    "what went wrong. The web console is at `/ui`.")


def create_app() -> FastAPI:
    """Build the API: routes, the problem+json handler, metrics, and the lazy backbone loader."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime.start()  # backbone loads in a thread; /healthz answers meanwhile
        yield

    app = FastAPI(title="MMLoP adaptation service", version="0.1.0", lifespan=lifespan,
                  description=_DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.runtime = ModelRuntime(settings)
    app.state.metrics = Metrics(app)
    problem.install(app)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    # Refuse oversized bodies while they stream in (issue 5); multipart framing gets 1 MB.
    app.add_middleware(BodyLimitMiddleware, limit=settings.upload_max_bytes + 1_000_000)
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer and log line has the id
    app.include_router(health.router)
    app.include_router(adaptations.router)
    app.include_router(events.router)
    app.include_router(lifecycle.router)
    app.include_router(classify.router)
    app.include_router(keys.router)
    app.include_router(webhooks.router)
    docs.install(app)
    openapi.install(app)
    console.mount(app)  # the web console at /ui/
    return app


app = create_app()
