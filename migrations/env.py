"""Alembic environment: the URL comes from the shared settings (``MMLOP_DATABASE_URL``).

Online upgrades are serialised (issue 12, D.9): concurrent ``alembic upgrade head`` runs (two
``make run`` starts, several replicas) take turns, and each reads the database's version only
once it holds the lock, so the later runs find the head and do nothing. SQLite: an exclusive
``flock`` on ``<database file>.migrate.lock``; PostgreSQL: a session advisory lock.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import Connection, text

from service.db import make_engine
from service.models import Base
from service.settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    if get_settings().log_format == "json":  # one JSON object per line, like the API and worker
        from service.logs import configure_logging

        configure_logging("json", get_settings().log_level)
    else:
        fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_migrations_offline() -> None:
    """Emit SQL without a database connection."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=_url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


_PG_LOCK_KEY = 0x6D6D6D67  # "mmmg": advisory lock id of migrations (the reconciler's is "mmlo")


@contextmanager
def _migration_lock(connection: Connection) -> Iterator[None]:
    """Hold the database's migration lock (blocking until it is free) for the ``with`` body."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
        connection.commit()  # a session lock: it outlives this transaction
        try:
            yield
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
            connection.commit()
        return
    database = connection.engine.url.database if connection.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".migrate.lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or the process dies
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_migrations_online() -> None:
    """Run migrations on a live connection, one upgrade at a time per database."""
    engine = make_engine(_url())
    with engine.connect() as connection, _migration_lock(connection):
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
