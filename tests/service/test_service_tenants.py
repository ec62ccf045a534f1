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
