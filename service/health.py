"""Readiness checks shared by the API (``/readyz``) and the CLI."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from sqlalchemy import text

from service.db import get_engine

logger = logging.getLogger(__name__)



def migrations_dir() -> Path | None:
    """The Alembic script folder: beside the package (source tree) or under the cwd (images)."""
    for candidate in (Path(__file__).resolve().parents[1] / "migrations", Path.cwd() / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    return None


@functools.lru_cache
def migration_head() -> str | None:
    """The newest Alembic revision shipped with this code."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    folder = migrations_dir()
    if folder is None:
        logger.warning("migrations folder not found; /readyz only checks that one was applied")
        return None
    cfg = Config()
    cfg.set_main_option("script_location", str(folder))
    return ScriptDirectory.from_config(cfg).get_current_head()


def database_status() -> tuple[bool, str]:
    """(ok, detail): the database answers and is migrated to the code's head revision."""
    try:
        with get_engine().connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as exc:  # noqa: BLE001
        return False, f"database unreachable or not migrated: {exc.__class__.__name__}"
    head = migration_head()
    if current is None or (head is not None and current != head):
        return False, f"database at revision {current}, code expects {head}; run alembic upgrade head"
    return True, "ok"
