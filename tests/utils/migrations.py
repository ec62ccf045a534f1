"""Helpers of the migration tests: an Alembic config for a database URL, and what a database
holds (tables, a table's columns)."""

from __future__ import annotations

from alembic.config import Config
from sqlalchemy import Engine, create_engine, inspect, text

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


def insert_old_adaptation(engine: Engine, adaptation_id: str, status: str, attempt: int = 0,
                          tenant_id: str = "t1") -> None:
    """Insert, with plain SQL (the columns of revision 0002), the tenant ``tenant_id`` and one of
    its adaptations: a row as a database from before a later revision holds it."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (:t, 'old', "
                          "CURRENT_TIMESTAMP)"), {"t": tenant_id})
        conn.execute(text(
            "INSERT INTO adaptations (id, tenant_id, status, request_hash, class_names, images, "
            "num_images, adapter_config, train_config, backbone, pretrained, attempt, "
            "cancel_requested, created_at) VALUES (:id, :t, :status, 'h', '[]', '[]', 0, "
            "'{}', '{}', 'b', 'p', :attempt, false, CURRENT_TIMESTAMP)"),
            {"id": adaptation_id, "t": tenant_id, "status": status, "attempt": attempt})
