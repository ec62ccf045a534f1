"""Fault-injection harness: a private redis-server, a TCP proxy to PostgreSQL that can be cut,
a tiny tmpfs blob store, and stacks on a database of their own (never the shared servers'
processes: those are used by other sessions)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


class RedisServer:
    """``redis-server`` on a free loopback port, without persistence (a restart loses all)."""

    def __init__(self, workdir: Path) -> None:
        from utils.stack import free_port

        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Broker URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start and wait for PING."""
        import redis

        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Kill it (SIGKILL: no save)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def llen(self, key: str) -> int:
        """Length of a list."""
        import redis

        return redis.Redis(port=self.port, socket_timeout=2).llen(key)


class TcpProxy:
    """Forward 127.0.0.1:<port> to a target; ``cut()`` drops the listener and every connection."""

    def __init__(self, target_port: int) -> None:
        from utils.stack import free_port

        self.port = free_port()
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                 reuse_address=True)

    async def _cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    def start(self) -> None:
        """Accept connections again."""
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    def cut(self) -> None:
        """Refuse new connections and reset the open ones (the database 'goes away')."""
        asyncio.run_coroutine_threadsafe(self._cut(), self.loop).result(10)

    def close(self) -> None:
        """Stop the proxy thread."""
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def own_database() -> Iterator[str]:
    """A PostgreSQL database for one fault test (its reconciler sees only its own jobs)."""
    from utils.stack import create_pg_database, drop_pg_database

    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private, non-persistent redis-server."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def make_stack(cwd: Path, database_url: str, broker_url: str, extra: dict[str, str] | None = None,
               blob_root: Path | None = None):
    """A Stack (not started) with the reconciler running every second."""
    from utils.stack import Stack, base_env

    blob_root = blob_root or cwd / "blobs"
    env = base_env({"MMLOP_DATABASE_URL": database_url, "MMLOP_BROKER_URL": broker_url,
                    "MMLOP_BLOB_ROOT": str(blob_root),
                    "MMLOP_TASK_QUEUE": f"mmlop-fault-{uuid.uuid4().hex[:8]}",
                    "MMLOP_RECONCILE_INTERVAL_S": "1", "MMLOP_RECONCILE_GRACE_S": "2",
                    # a temp file goes once the worker has seen it unchanged for 3 s
                    "MMLOP_BLOB_TEMP_MAX_AGE_S": "3",
                    **(extra or {})})
    return Stack(env=env, cwd=cwd, database_url=database_url, blob_root=blob_root)


def submit_small(client, epochs: int = 1) -> str:
    """Submit a 2-class, 4-photo job; returns its id."""
    import json

    from utils.factories import image_multipart, photos

    files, data = image_multipart(photos("train", 2, ["bag", "coat"]))
    config = {"adapter": {"preset": "ivlp"}, "train": {"epochs": epochs, "augment": False,
                                                       "batch_size": 4}}
    resp = client.post("/adaptations", files=files, data={**data, "config": json.dumps(config)})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def store_consistent(stack) -> list[str]:
    """Problems between the blob store and the database (empty list: consistent)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from service.db import make_engine
    from service.models import Adaptation

    engine = make_engine(stack.database_url)
    with Session(engine) as session:
        rows = session.scalars(select(Adaptation)).all()
    engine.dispose()
    live = {(r.tenant_id, r.id): r for r in rows if r.deleted_at is None}
    problems = []
    root = stack.blob_root
    for folder in root.glob("tenants/*/adaptations/*"):
        if (folder.parent.parent.name, folder.name) not in live:
            problems.append(f"orphaned folder {folder.relative_to(root)}")
    for (tenant_id, job_id), row in live.items():
        for key, _label in row.images:
            if not (root / key).is_file():
                problems.append(f"job {job_id}: missing upload {key}")
        ckpt = root / f"tenants/{tenant_id}/adaptations/{job_id}/checkpoint/adapter.zip"
        if row.status == "succeeded" and not ckpt.is_file():
            problems.append(f"job {job_id}: succeeded without a checkpoint")
    leftovers = list((root / ".tmp").iterdir()) if (root / ".tmp").is_dir() else []
    problems.extend(f"temp leftover {p.name}" for p in leftovers)
    return problems
