"""Real service stacks for tests: throwaway PostgreSQL database, Redis db, uvicorn and
``celery worker`` subprocesses (no mocks, no eager mode)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_TEST_DB = 13


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_pg_database() -> str:
    """Create a throwaway PostgreSQL database; returns its SQLAlchemy URL."""
    import psycopg

    name = f"mmlop_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                         autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_pg_database(url: str) -> None:
    """Drop the database created by ``create_pg_database``."""
    import psycopg

    name = url.rsplit("/", 1)[-1]
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                         autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ping_redis(db: int) -> None:
    """Raise unless Redis answers on database ``db``."""
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=5).ping()


def delete_redis_queue(db: int, queue: str) -> None:
    """Remove one test session's queue from Redis (other sessions may share the database)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=5)
    client.delete(queue, *client.keys(f"{queue}\x06\x16*"))


def base_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a service subprocess: no inherited MMLOP_*, test defaults, ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(
        # The shipped tiny CLIP pretrained here on Fashion-MNIST (docs/MODEL_CARD_TINY.md): adapters
        # trained by the service tests learn from a real prior, with the default preset.
        MMLOP_BACKBONE="mmlop-tiny", MMLOP_PRETRAINED="fmnist", MMLOP_DEVICE="cpu",
        MMLOP_TORCH_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
        MMLOP_SECRET_KEY="test-secret-key-0123456789abcdef", PYTHONUNBUFFERED="1",
        MMLOP_PROGRESS_INTERVAL_S="0.25",
        # The periodic reconciler re-sends every queued job of the database it finds missing
        # from its broker; test stacks sharing a database over several queues turn it off
        # (tests/faults turn it on with their own database).
        MMLOP_RECONCILE_INTERVAL_S="0",
    )
    env.update(extra)
    return env


@dataclass
class Stack:
    """A running API + worker pair and what the tests need to reach them."""

    env: dict[str, str]
    cwd: Path
    database_url: str
    blob_root: Path
    port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """Root URL of the API."""
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = None, timeout: float = 60.0) -> httpx.Client:
        """An httpx client for the API, authenticated with ``key`` if given."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def migrate(self) -> None:
        """``alembic upgrade head`` (subprocess, as in deployment)."""
        subprocess.run([sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"),
                        "upgrade", "head"], cwd=self.cwd, env=self.env, check=True,
                       capture_output=True, timeout=120)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.cwd / f"{name}.log"
        fh = open(log, "ab")  # noqa: SIM115 - closed with the process
        self.logs[name] = log
        self.procs[name] = subprocess.Popen(args, cwd=self.cwd, env=self.env, stdout=fh,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def start_api(self) -> None:
        """Start ``uvicorn api.main:app`` and wait for /healthz."""
        self._spawn_api()
        self._wait_api()

    def start_worker_and_api(self, concurrency: int = 1) -> None:
        """:meth:`start_worker` and :meth:`start_api` with both processes starting at once (each
        imports torch and loads the backbone for several seconds); returns when both are up."""
        offset = self._spawn_celery("worker", ["--concurrency", str(concurrency)])
        self._spawn_api()
        self._wait_celery("worker", offset)
        self._wait_api()

    def _spawn_api(self) -> None:
        self.port = free_port()
        self._spawn("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host",
                            "127.0.0.1", "--port", str(self.port), "--log-level", "warning"])

    def _wait_api(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self._check_alive("api")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("API did not start:\n" + self.log_tail("api"))

    def wait_ready(self, timeout: float = 90) -> None:
        """Wait until /readyz answers 200."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = httpx.get(self.base_url + "/readyz", timeout=10)
            if last.status_code == 200:
                return
            time.sleep(0.5)
        raise RuntimeError(f"API not ready: {last.text if last else ''}\n" + self.log_tail("api"))

    def start_worker(self, concurrency: int = 1) -> None:
        """Start ``celery -A worker.celery_app worker`` (prefork, ``concurrency`` processes)."""
        self._start_celery("worker", ["--concurrency", str(concurrency)])

    def start_webhook_worker(self) -> None:
        """Start the light webhook worker as ``make run`` and compose do: ``-Q`` the
        ``MMLOP_WEBHOOK_QUEUE`` of this stack's environment, a pool of threads."""
        self._start_celery("webhooks", ["-Q", self.env["MMLOP_WEBHOOK_QUEUE"], "--pool",
                                        "threads", "--concurrency", "4"])

    def _start_celery(self, name: str, options: list[str]) -> None:
        self._wait_celery(name, self._spawn_celery(name, options))

    def _spawn_celery(self, name: str, options: list[str]) -> int:
        """Start a celery worker; returns the offset in its log where this run's lines begin."""
        log = self.cwd / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        self._spawn(name, [sys.executable, "-m", "celery", "-A", "worker.celery_app",
                           "worker", *options, "--loglevel", "INFO",
                           "--without-gossip", "--without-mingle",
                           "--hostname", f"test-{uuid.uuid4().hex[:6]}@%h"])
        return offset

    def _wait_celery(self, name: str, offset: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self._check_alive(name)
            if b"ready." in self.logs[name].read_bytes()[offset:]:
                return
            time.sleep(0.3)
        raise RuntimeError(f"{name} did not start:\n" + self.log_tail(name))

    def kill_worker(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as a crash would."""
        proc = self.procs["worker"]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n" + self.log_tail(name))

    def log_tail(self, name: str, chars: int = 4000) -> str:
        """The end of a process's log."""
        try:
            return self.logs[name].read_text(errors="replace")[-chars:]
        except (KeyError, OSError):
            return ""

    def stop(self) -> None:
        """SIGTERM each process group, then SIGKILL what is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()


@contextmanager
def own_pg_stack(cwd: Path, redis_broker_url: str, extra: dict[str, str],
                 worker_concurrency: int | None = None) -> Iterator[Stack]:
    """uvicorn (and a worker of ``worker_concurrency`` processes, when given) on a PostgreSQL
    database and a Redis queue of its own, migrated and ready; both are removed afterwards.

    ``extra`` adds ``MMLOP_*`` settings to the environment (limits, budgets, intervals).
    """
    database_url = create_pg_database()
    queue = f"mmlop-test-{uuid.uuid4().hex[:10]}"
    env = base_env({"MMLOP_DATABASE_URL": database_url, "MMLOP_BROKER_URL": redis_broker_url,
                    "MMLOP_BLOB_ROOT": str(cwd / "blobs"), "MMLOP_TASK_QUEUE": queue, **extra})
    stack = Stack(env=env, cwd=cwd, database_url=database_url, blob_root=cwd / "blobs")
    try:
        stack.migrate()
        if worker_concurrency is not None:
            stack.start_worker_and_api(concurrency=worker_concurrency)
        else:
            stack.start_api()
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()
        delete_redis_queue(REDIS_TEST_DB, queue)
        drop_pg_database(database_url)


def wait_for_status(client: httpx.Client, job_id: str, statuses: set[str],
                    timeout: float = 240) -> dict:
    """Poll ``GET /adaptations/{id}`` until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        resp = client.get(f"/adaptations/{job_id}")
        resp.raise_for_status()
        body = resp.json()
        if body["status"] in statuses:
            return body
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {body.get('status')} after {timeout}s: {body}")
