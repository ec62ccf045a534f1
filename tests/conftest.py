"""Shared pytest fixtures. Add fixtures here; never remove others'."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))  # makes tests/utils importable as `utils`


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n N``), each worker and the processes it starts use one torch thread.

    N workers on N cores then do not oversubscribe them: torch's OpenMP threads spin while they
    wait (under ``-n 3`` with torch's default threads, the CLI training test took 1137 s against
    58 s alone).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        import torch

        torch.set_num_threads(1)


# ---- service stacks (tests/api, tests/worker, tests/service) ----------------------------------

@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (127.0.0.1:5432, user postgres), dropped afterwards."""
    from utils.stack import create_pg_database, drop_pg_database

    try:
        url = create_pg_database()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required for service tests: {exc}")
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def redis_broker_url() -> Iterator[str]:
    """A Redis broker URL on a database number reserved for these tests."""
    from utils.stack import REDIS_TEST_DB, ping_redis

    try:
        ping_redis(REDIS_TEST_DB)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Redis at 127.0.0.1:6379 is required for service tests: {exc}")
    yield f"redis://127.0.0.1:6379/{REDIS_TEST_DB}"


@pytest.fixture(scope="session")
def task_queue_name(redis_broker_url: str) -> Iterator[str]:
    """A queue name unique to this test session (concurrent sessions share Redis), removed after."""
    import uuid

    from utils.stack import REDIS_TEST_DB, delete_redis_queue

    name = f"mmlop-test-{uuid.uuid4().hex[:10]}"
    yield name
    delete_redis_queue(REDIS_TEST_DB, name)


@pytest.fixture(scope="session")
def pg_stack(tmp_path_factory: pytest.TempPathFactory, pg_database_url: str,
             redis_broker_url: str, task_queue_name: str) -> Iterator["Stack"]:  # noqa: F821
    """Real uvicorn + real celery worker on PostgreSQL and Redis, migrated with Alembic."""
    from utils.stack import Stack, base_env

    cwd = tmp_path_factory.mktemp("pg_stack")
    blob_root = cwd / "blobs"
    env = base_env({"MMLOP_DATABASE_URL": pg_database_url, "MMLOP_BROKER_URL": redis_broker_url,
                    "MMLOP_BLOB_ROOT": str(blob_root), "MMLOP_TASK_QUEUE": task_queue_name})
    stack = Stack(env=env, cwd=cwd, database_url=pg_database_url, blob_root=blob_root)
    try:
        stack.migrate()
        stack.start_worker_and_api()
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def tenant_factory(pg_stack: "Stack"):  # noqa: F821
    """Create tenants in the PostgreSQL stack: ``tenant_factory() -> (tenant_id, api_key)``."""
    from utils.factories import make_tenant

    return lambda name=None: make_tenant(pg_stack.database_url, name)


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator["Stack"]:  # noqa: F821
    """Real uvicorn + celery worker on the embedded defaults (SQLite, filesystem broker, ./var)."""
    from utils.stack import Stack, base_env

    cwd = tmp_path_factory.mktemp("embedded")
    stack = Stack(env=base_env({}), cwd=cwd, database_url=f"sqlite:///{cwd}/var/mmlop.db",
                  blob_root=cwd / "var" / "blobs")
    try:
        stack.migrate()
        stack.start_worker_and_api()
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


# ---- S3 wire-protocol server (tests/service/test_service_blobs.py, S3 end-to-end) -------------

@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a moto_server subprocess on 127.0.0.1 (real HTTP), stopped afterwards."""
    from utils.s3 import start_moto_server, stop

    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    proc, endpoint = start_moto_server(log=log)
    yield endpoint
    stop(proc)


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process's standard AWS settings pointed at the test server; returns the endpoint."""
    from utils.s3 import S3_ENV

    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    return s3_endpoint
