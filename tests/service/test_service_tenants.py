"""Tenants and API keys: keyed hashing, authentication, revocation, the `tenant` CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import make_engine
from service.models import ApiKey
from service.tenants import authenticate, create_tenant, hash_key, revoke_tenant, TenantError
from utils.stack import REPO

SECRET = "unit-test-secret-0123456789"


@pytest.fixture()
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'unit.db'}"
    cfg = Config(str(REPO / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    return url


def test_hash_is_keyed():
    assert hash_key("mmlop_x", SECRET) == hash_key("mmlop_x", SECRET)
    assert hash_key("mmlop_x", SECRET) != hash_key("mmlop_x", SECRET + "2")
    assert len(hash_key("mmlop_x", SECRET)) == 64


def test_keys_are_stored_hashed_and_authenticate(sqlite_url):
    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        tenant, key = create_tenant(session, "acme", secret=SECRET)
        session.commit()
        stored = session.scalars(select(ApiKey.key_hash)).all()
        assert key not in stored and hash_key(key, SECRET) in stored
        assert authenticate(session, key, SECRET).id == tenant.id
        assert authenticate(session, key + "x", SECRET) is None
        assert authenticate(session, "not-a-key", SECRET) is None
        assert authenticate(session, key, "another-secret-0123456789") is None
        with pytest.raises(TenantError):
            create_tenant(session, "acme", secret=SECRET)
        assert revoke_tenant(session, "acme") == 1
        session.commit()
        assert authenticate(session, key, SECRET) is None
    engine.dispose()


def test_tenant_cli_create_and_revoke(sqlite_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(MMLOP_DATABASE_URL=sqlite_url, MMLOP_SECRET_KEY=SECRET)
    run = [sys.executable, "-c", "from service.cli_tenant import tenant_app; tenant_app()"]
    created = subprocess.run(run + ["create", "globex"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("mmlop_") and "\n" not in key
    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        assert authenticate(session, key, SECRET) is not None
    dup = subprocess.run(run + ["create", "globex"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert dup.returncode == 2 and "already exists" in dup.stderr
    revoked = subprocess.run(run + ["revoke", "globex"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    with Session(engine) as session:
        assert authenticate(session, key, SECRET) is None
    engine.dispose()


def test_tenant_cli_database_errors_are_one_line(tmp_path):
    """Regression: a database error (e.g. SQLite busy) printed a SQLAlchemy traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(MMLOP_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/none", MMLOP_SECRET_KEY=SECRET)
    run = [sys.executable, "-c", "from service.cli_tenant import tenant_app; tenant_app()"]
    res = subprocess.run(run + ["create", "initech"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("error: database unavailable or busy") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_rotation_overlap_expiry_and_throttled_last_use(sqlite_url):
    """Per-key management on a settable clock: the old key works through the overlap and not
    after it; last_used_at is written at most once per TOUCH_INTERVAL_S."""
    from datetime import timedelta

    from service.api_keys import MAX_OVERLAP_S, TOUCH_INTERVAL_S, rotate_key, touch_key
    from service.models import as_utc, utcnow
    from service.tenants import authenticate_key

    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        tenant, key = create_tenant(session, "acme", secret=SECRET)
        session.commit()
        row, _ = authenticate_key(session, key, SECRET)
        t0 = utcnow()
        assert touch_key(session, row, now=t0)
        assert not touch_key(session, row, now=t0 + timedelta(seconds=TOUCH_INTERVAL_S - 1))
        later = t0 + timedelta(seconds=TOUCH_INTERVAL_S + 1)
        assert touch_key(session, row, now=later)
        session.refresh(row)
        assert as_utc(row.last_used_at) == later
        with pytest.raises(ValueError):
            rotate_key(session, tenant.id, row.id, overlap_s=MAX_OVERLAP_S + 1, now=t0)
        _, new_key = rotate_key(session, tenant.id, row.id, overlap_s=30, now=t0, secret=SECRET)
        session.commit()
        assert authenticate_key(session, key, SECRET, now=t0 + timedelta(seconds=29)) is not None
        assert authenticate_key(session, key, SECRET, now=t0 + timedelta(seconds=31)) is None
        assert authenticate_key(session, new_key, SECRET, now=t0 + timedelta(seconds=31))
    engine.dispose()


def test_tenant_cli_lists_and_revokes_single_keys(sqlite_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(MMLOP_DATABASE_URL=sqlite_url, MMLOP_SECRET_KEY=SECRET)
    run = [sys.executable, "-c", "from service.cli_tenant import tenant_app; tenant_app()"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(run + list(args), env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)

    first = cli("create", "umbrella").stdout.strip()
    second = cli("key", "umbrella").stdout.strip()
    listed = cli("keys", "umbrella")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split("\t")[:2] == ["id", "prefix"] and len(lines) == 3
    assert [ln.split("\t")[1] for ln in lines[1:]] == [first[:12], second[:12]]
    assert first not in listed.stdout and all(ln.endswith("\tactive") for ln in lines[1:])
    assert cli("revoke-key", first[:12]).returncode == 0
    last = cli("revoke-key", lines[2].split("\t")[0])
    assert last.returncode == 2 and "last active key" in last.stderr
    assert cli("revoke-key", "mmlop_nope").returncode == 2
    assert cli("keys", "umbrella").stdout.strip().splitlines()[1].endswith("\trevoked")
    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        assert authenticate(session, first, SECRET) is None
        assert authenticate(session, second, SECRET) is not None
    engine.dispose()
