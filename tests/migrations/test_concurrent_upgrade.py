"""Concurrent ``alembic upgrade head`` runs (issue 12, D.9): three at once on a fresh database
all succeed and leave it at the head, as concurrent ``make run`` starts and replicas do.

Before the fix one of three runs on SQLite failed with "table tenants already exists".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from utils.stack import REPO, base_env, create_pg_database, drop_pg_database

RUNS = 3
ROUNDS = 3  # the race is timing-dependent: several fresh databases make a miss unlikely


def _upgrade_concurrently(url: str, cwd: Path) -> list[subprocess.CompletedProcess]:
    env = base_env({"MMLOP_DATABASE_URL": url})
    procs = [subprocess.Popen([sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"),
                               "upgrade", "head"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(RUNS)]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), p.stdout.read()) for p in procs]


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(Config(str(REPO / "alembic.ini"))).get_current_head()


def _assert_at_head(url: str, results: list[subprocess.CompletedProcess]) -> None:
    failed = [r.stdout for r in results if r.returncode != 0]
    assert not failed, failed
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert versions == [_head()]
        assert {"tenants", "adaptations"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_three_concurrent_upgrades_on_fresh_sqlite(tmp_path: Path, round_: int) -> None:
    url = f"sqlite:///{tmp_path}/var/mmlop.db"
    _assert_at_head(url, _upgrade_concurrently(url, tmp_path))


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_three_concurrent_upgrades_on_fresh_postgresql(tmp_path: Path, round_: int) -> None:
    url = create_pg_database()
    try:
        _assert_at_head(url, _upgrade_concurrently(url, tmp_path))
    finally:
        drop_pg_database(url)
