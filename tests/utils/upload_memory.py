"""Peak Python allocations of one ``POST /adaptations`` of a zip, measured in a fresh process.

``python upload_memory.py KEY WARMUP_ZIP ZIP`` (cwd, ``MMLOP_*`` environment and a migrated
database prepared by the caller) builds the API in-process, sends ``WARMUP_ZIP`` once (lazy
imports and first-use caches), then sends ``ZIP`` under ``tracemalloc``, streamed from disk in
64 KiB chunks through the real ASGI stack (middleware, multipart parser, route, blob store,
broker), and prints ``{"status": ..., "peak": <bytes>, "detail": ...}`` as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

BOUNDARY = "mmlop-upload-memory"


async def _multipart(path: Path, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="archive"; filename="{path.name}"'
           "\r\nContent-Type: application/zip\r\n\r\n").encode()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            yield block
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def _post(client: httpx.AsyncClient, key: str, path: Path) -> httpx.Response:
    return await client.post("/adaptations", content=_multipart(path), headers={
        "Authorization": f"Bearer {key}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


async def measure(key: str, warmup: Path, archive: Path) -> dict:
    """Status and traced peak bytes of the upload of ``archive`` (after one of ``warmup``)."""
    from api.main import create_app

    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=300) as client:
        first = await _post(client, key, warmup)
        if first.status_code != 202:
            return {"status": first.status_code, "peak": None, "detail": first.text[:500]}
        tracemalloc.start()
        resp = await _post(client, key, archive)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {"status": resp.status_code, "peak": peak, "detail": resp.text[:500]}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))))
