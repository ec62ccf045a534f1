"""Revision 0004 (webhooks) on SQLite and PostgreSQL: an adaptation from before it reads with no
callback_url after the upgrade, the three tables appear, and it downgrades and upgrades again."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, text

from utils.migrations import alembic_config, column_names, insert_old_adaptation, table_names

TABLES = {"webhook_secrets", "webhook_events", "webhook_attempts"}


def _check(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "0003")
    assert not TABLES & table_names(url) and "callback_url" not in column_names(url, "adaptations")
    engine = create_engine(url)
    insert_old_adaptation(engine, "a1", "succeeded", attempt=1)
    command.upgrade(cfg, "0004")
    assert TABLES <= table_names(url) and "callback_url" in column_names(url, "adaptations")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT callback_url FROM adaptations WHERE id = 'a1'")
                            ).scalar_one() is None
    engine.dispose()
    command.downgrade(cfg, "0003")
    assert not TABLES & table_names(url) and "callback_url" not in column_names(url, "adaptations")
    command.upgrade(cfg, "head")
    assert TABLES <= table_names(url)


def test_0004(database_url: str) -> None:
    _check(database_url)
