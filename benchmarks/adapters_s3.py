"""S3 part of ``python -m benchmarks.adapters --store s3``: cold adapter loads through the S3 blob
store, as the API does them (``local_dir`` download into the read cache, then the engine's load).

The server is the one of the standard AWS settings (``AWS_ENDPOINT_URL``, credentials; the bucket
of ``--s3-url`` must exist) or, without ``AWS_ENDPOINT_URL``, a moto_server this module starts on
127.0.0.1 (``moto[server]``, the dev extra) and stops afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import percentile

_LOCAL_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
              "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


@contextmanager
def s3_server(url: str | None) -> Iterator[tuple[str, str]]:
    """(blob URL, endpoint description): ``url`` on the configured endpoint, or a fresh bucket on
    a local moto_server (this process's AWS_* variables point at it until the block ends)."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        if not url:
            raise SystemExit("--s3-url s3://bucket/prefix is required with AWS_ENDPOINT_URL set")
        yield url, os.environ["AWS_ENDPOINT_URL"]
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    exe = str(exe) if exe.exists() else shutil.which("moto_server")
    if exe is None:
        raise SystemExit("no AWS_ENDPOINT_URL and no moto_server: pip install -e '.[dev]'")
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in (*_LOCAL_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update({**_LOCAL_ENV, "AWS_ENDPOINT_URL": endpoint})
    try:
        _wait(endpoint, proc)
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield url or f"s3://{bucket}/bench", f"moto_server {endpoint}"
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait(endpoint: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"moto_server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("moto_server did not answer within 60 s")


async def s3_cold_loads(engine, files: dict[str, bytes], n: int, url: str, cache_dir: Path) -> dict:
    """Upload ``n`` checkpoints, then time each cold load: ``local_dir`` (download) + engine load.

    Returns s3_cold_load_p50_s/p99_s (both steps), s3_fetch_p50_s/p99_s (download alone), s3_put_s.
    """
    from starlette.concurrency import run_in_threadpool

    from service.blobs import open_blob_store

    store = open_blob_store(url, cache_dir, cache_entries=max(n, 1))
    prefixes = [f"tenants/bench/adaptations/{i:05d}/checkpoint/adapter" for i in range(n)]
    t0 = time.perf_counter()
    for prefix in prefixes:
        for name, data in files.items():
            store.put(f"{prefix}/{name}", data)
    put_s = time.perf_counter() - t0
    cold, fetch = [], []
    for i, prefix in enumerate(prefixes):
        t = time.perf_counter()
        local = await run_in_threadpool(store.local_dir, prefix, list(files), "1")
        fetch.append(time.perf_counter() - t)
        with local:  # pinned in the read cache until loaded
            await engine.cache.get(f"s3-{i:05d}", local.path)
        cold.append(time.perf_counter() - t)
    return {"s3_cold_load_p50_s": percentile(cold, 0.5), "s3_cold_load_p99_s": percentile(cold, 0.99),
            "s3_fetch_p50_s": percentile(fetch, 0.5), "s3_fetch_p99_s": percentile(fetch, 0.99),
            "s3_put_s": put_s, "s3_cold": n}
