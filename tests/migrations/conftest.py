"""Fixtures of the migration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from utils.stack import create_pg_database, drop_pg_database


@pytest.fixture(autouse=True)
def _no_inherited_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Alembic's env reads MMLOP_DATABASE_URL first: the tests' own URL must win."""
    monkeypatch.delenv("MMLOP_DATABASE_URL", raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind the service supports: a SQLite file under ``tmp_path``, or
    a new PostgreSQL database on the local server, dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)
