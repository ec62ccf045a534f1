"""The web console: static HTML/CSS/JS served by the API at ``/ui/`` (no build step, nothing
from another origin). The page talks to the same API with ``Authorization: Bearer`` from a key
it holds in memory; docs/SERVICE.md "Web console" describes it."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Same-origin only: the page's own files, API calls to this server, thumbnails from blob: URLs.
# Bars set their width through the CSSOM (element.style), which style-src 'self' allows.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class ConsoleFiles(StaticFiles):
    """``StaticFiles`` (``/ui`` -> ``/ui/``, ``index.html`` for ``/ui/``) whose answers carry
    ``HEADERS``; an unknown file is the API's problem+json 404."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file's response with the console's security headers."""
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def mount(app: FastAPI, path: str = "/ui") -> None:
    """Serve the console under ``path`` (not listed in the OpenAPI schema)."""
    app.mount(path, ConsoleFiles(directory=STATIC_DIR, html=True), name="console")
