"""Fixtures of the migration tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_inherited_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Alembic's env reads MMLOP_DATABASE_URL first: the tests' own URL must win."""
    monkeypatch.delenv("MMLOP_DATABASE_URL", raising=False)
