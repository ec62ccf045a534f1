"""Helpers of the migration tests: an Alembic config for a database URL, and what a database
holds (tables, a table's columns)."""

from __future__ import annotations

from alembic.config import Config
from sqlalchemy import create_engine, inspect

from utils.stack import REPO


def alembic_config(url: str) -> Config:
    """The repository's Alembic config pointed at ``url`` (the service's logging left alone)."""
    cfg = Config(str(REPO / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logger"] = False
    return cfg


def table_names(url: str) -> set[str]:
    """Names of the tables in the database at ``url``."""
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def column_names(url: str, table: str) -> set[str]:
    """Names of the columns of ``table`` in the database at ``url``."""
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()
