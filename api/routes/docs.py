"""``/`` (links to the console and the API reference) and ``/docs`` (Swagger UI), offline.

Swagger UI's JavaScript and CSS (Swagger UI 5, which reads the OpenAPI 3.1 document FastAPI
serves; Swagger UI 4 cannot) are served from the ``fastapi-offline`` package's ``static`` folder
under ``/docs/assets``, so the reference works without network access (FastAPI's default page
loads them from a CDN). Only Swagger UI is served, not ReDoc.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)

ASSETS = "/docs/assets"

_ROOT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MMLoP adaptation service</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>MMLoP adaptation service</h1><ul>
<li><a href="/ui">Web console</a>: create adaptations from photos, watch them, classify</li>
<li><a href="/docs">API reference</a> (<a href="/openapi.json">OpenAPI document</a>)</li>
</ul></main></body></html>
"""


@router.get("/", response_class=HTMLResponse)
def root() -> HTMLResponse:
    """A page linking the web console (``/ui``) and the API reference (``/docs``)."""
    return HTMLResponse(_ROOT_PAGE)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    """Swagger UI over ``/openapi.json`` with local assets (no CDN, no online validator)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="MMLoP adaptation service - API reference",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False})


def install(app: FastAPI) -> None:
    """Mount the Swagger UI assets and add ``/`` and ``/docs`` (create the app with
    ``docs_url=None, redoc_url=None``)."""
    from importlib.resources import files

    assets = files("fastapi_offline") / "static"  # swagger-ui-bundle.js, swagger-ui.css, favicon.png
    app.mount(ASSETS, StaticFiles(directory=str(assets)), name="swagger-ui-assets")
    app.include_router(router)
