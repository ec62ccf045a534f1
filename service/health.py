"""Readiness checks shared by the API (``/readyz``) and the CLI."""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

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


_BLOB_PROBE_TTL_S = 5.0  # readiness polls within this reuse the last answer (no S3 hammering)
_BLOB_PROBE_TIMEOUT_S = 3.0
_blob_probe_lock = threading.Lock()
_blob_probe: dict[str, Any] = {"at": -1e18, "result": (False, "not checked"), "future": None}
_blob_probe_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmlop-blob-probe")


def blob_store_status() -> tuple[bool, str]:
    """(ok, detail): the blob store answers a cheap probe (S3: HEAD of the bucket; filesystem:
    the folder exists and is writable) within 3 s.

    The answer is kept for 5 s, and at most one probe runs at a time (a slow one is not
    started again while it hangs). ``detail`` names the kind of failure, not the bucket.
    """
    from service.blobs import BlobStoreConfigError, get_blob_store

    with _blob_probe_lock:
        if time.monotonic() - _blob_probe["at"] < _BLOB_PROBE_TTL_S:
            return _blob_probe["result"]
        future = _blob_probe["future"]
        if future is None or future.done():
            future = _blob_probe["future"] = _blob_probe_pool.submit(
                lambda: get_blob_store().probe())
    try:
        future.result(timeout=_BLOB_PROBE_TIMEOUT_S)
        result = (True, "ok")
    except FutureTimeout:
        result = (False, f"unreachable: no answer within {_BLOB_PROBE_TIMEOUT_S:g} s")
    except BlobStoreConfigError:
        result = (False, "refused: bucket missing or credentials/permissions wrong "
                         "(check MMLOP_BLOB_URL and the store's credentials)")
    except Exception as exc:  # noqa: BLE001 - any failure is "not ready"; the log has it
        logger.warning("blob store probe failed: %s", exc)
        result = (False, "unreachable or not writable")
    with _blob_probe_lock:
        _blob_probe["at"], _blob_probe["result"] = time.monotonic(), result
    return result
