"""Finished evaluation cells on disk, so an interrupted run resumes where it stopped.

One JSON file per (task, preset, dataset, shots, seed) under ``OUT/cells/``; it records the
settings that produced it (backbone, pretrained source, adapter and train configs, eval
precision). A cell is reused only when those settings are equal; otherwise it is recomputed and
overwritten. Files are written atomically (temp file + ``os.replace``).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically (parents created)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class CellStore:
    """Cells of one output directory: ``OUT/cells/<task>/<preset>/<dataset>/shots<k>-seed<s>.json``."""

    def __init__(self, out: str | Path) -> None:
        self.root = Path(out) / "cells"

    def path(self, task: str, preset: str, dataset: str, shots: int | None, seed: int) -> Path:
        """File of one cell (preset names may contain '+', kept as is)."""
        return self.root / task / preset / dataset / f"shots{shots if shots is not None else 'all'}-seed{seed}.json"

    def load(self, path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The stored record when it exists, parses, and was made with `settings`; else None."""
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("cell %s is unreadable; recomputing it", path)
            return None
        if record.get("settings") != _normalise(settings):
            log.warning("cell %s was computed with other settings; recomputing it", path)
            return None
        return record

    def save(self, path: Path, record: dict[str, Any]) -> None:
        """Store `record` (must hold its ``settings``) atomically."""
        write_json_atomic(path, _normalise(record))


__all__ = ["CellStore", "write_json_atomic", "write_text_atomic"]
