"""An API-only stack with small limits for the hostile-input, identity and abuse tests.

It has its own PostgreSQL database and task queue on the shared servers, and no worker
(jobs it accepts stay ``queued``; the queue is deleted afterwards).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

LIMITS = {
    "MMLOP_UPLOAD_MAX_BYTES": str(3 * 1024 * 1024),
    "MMLOP_UPLOAD_MAX_FILE_BYTES": str(1024 * 1024),
    "MMLOP_UPLOAD_JSON_MAX_BYTES": str(2 * 1024 * 1024),
    "MMLOP_UPLOAD_MAX_FILES": "20",
    "MMLOP_UPLOAD_MAX_PIXELS": "4000000",
    "MMLOP_RATE_LIMIT_REQUESTS": "300",
    "MMLOP_RATE_LIMIT_WINDOW_S": "60",
    "MMLOP_QUOTA_MAX_ADAPTERS": "4",
    "MMLOP_QUOTA_MAX_CONCURRENT_JOBS": "2",
    "MMLOP_QUOTA_MAX_STORED_BYTES": "1500000",
    "MMLOP_RECONCILE_INTERVAL_S": "0",
}


@pytest.fixture(scope="session")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory,
                  redis_broker_url: str) -> Iterator["Stack"]:  # noqa: F821
    """uvicorn with the small ``LIMITS`` on its own database; no worker."""
    from utils.stack import own_pg_stack

    with own_pg_stack(tmp_path_factory.mktemp("hostile"), redis_broker_url, LIMITS) as stack:
        yield stack


@contextmanager
def _sqlite_stack(cwd: Path, env_extra: dict[str, str]) -> Iterator["Stack"]:  # noqa: F821
    """uvicorn on its own SQLite file and filesystem broker under ``cwd``; no worker."""
    from utils.stack import Stack, base_env

    database_url = f"sqlite:///{cwd}/var/mmlop.db"
    env = base_env({"MMLOP_DATABASE_URL": database_url, **env_extra})
    stack = Stack(env=env, cwd=cwd, database_url=database_url, blob_root=cwd / "var" / "blobs")
    try:
        stack.migrate()
        stack.start_api()
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def hostile_sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator["Stack"]:  # noqa: F821
    """uvicorn with the small ``LIMITS`` on its own SQLite file and filesystem broker; no worker."""
    with _sqlite_stack(tmp_path_factory.mktemp("hostile_sqlite"), LIMITS) as stack:
        yield stack


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_stack(request: pytest.FixtureRequest) -> "Stack":  # noqa: F821
    """The hostile API stack on each database the service supports (SQLite, then PostgreSQL)."""
    name = "hostile_sqlite_stack" if request.param == "sqlite" else "hostile_stack"
    return request.getfixturevalue(name)


@pytest.fixture
def new_tenant(hostile_stack):
    """A fresh tenant on the hostile stack: ``(tenant id, api key)``."""
    from utils.factories import make_tenant

    return make_tenant(hostile_stack.database_url)


# The fuzzer sends every case with and without a key: its failed authentications would make
# the address's auth throttle (and a tenant's rate limit) answer 429 to everything after the
# first few dozen calls - hiding the routes from it and locking the shared stacks' address out
# for the other hostile tests. Its own stacks keep the small upload limits without those two.
FUZZ_LIMITS = {**LIMITS, "MMLOP_AUTH_FAILURE_LIMIT": "0", "MMLOP_RATE_LIMIT_REQUESTS": "0"}


@pytest.fixture(params=["sqlite", "postgresql"])
def fuzz_stack(request: pytest.FixtureRequest, tmp_path: Path,
               redis_broker_url: str) -> Iterator["Stack"]:  # noqa: F821
    """A hostile stack of its own for the fuzzer, on each database (``FUZZ_LIMITS``)."""
    from utils.stack import own_pg_stack

    if request.param == "sqlite":
        with _sqlite_stack(tmp_path, FUZZ_LIMITS) as stack:
            yield stack
    else:
        with own_pg_stack(tmp_path, redis_broker_url, FUZZ_LIMITS) as stack:
            yield stack
