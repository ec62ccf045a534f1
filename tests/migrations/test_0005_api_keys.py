"""Revision 0005 (per-key management) on SQLite and PostgreSQL: a key issued before it keeps
working after the upgrade (no name, never used, no expiry), and it downgrades and upgrades again."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, text

from utils.migrations import alembic_config, column_names

COLUMNS = {"name", "last_used_at", "expires_at"}


def _key_columns(url: str) -> set[str]:
    return column_names(url, "api_keys")


def _check(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "0004")
    assert not COLUMNS & _key_columns(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'old', "
                          "CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO api_keys (id, tenant_id, key_hash, prefix, created_at) "
                          "VALUES ('k1', 't1', 'h1', 'mmlop_abcdef', CURRENT_TIMESTAMP)"))
    command.upgrade(cfg, "head")
    assert COLUMNS <= _key_columns(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT name, last_used_at, expires_at, revoked_at FROM api_keys "
                                "WHERE id = 'k1'")).one()
    engine.dispose()
    assert tuple(row) == (None, None, None, None)
    command.downgrade(cfg, "0004")
    assert not COLUMNS & _key_columns(url)
    command.upgrade(cfg, "head")
    assert COLUMNS <= _key_columns(url)


def test_0005(database_url: str) -> None:
    _check(database_url)
