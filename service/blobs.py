"""Durable blob store on a local (or mounted network) filesystem.

Keys are relative POSIX paths such as ``tenants/<t>/adaptations/<id>/uploads/000001.png``.
Every write goes to a temporary file in the same filesystem, is fsynced, then renamed into
place (``os.replace``), so a reader never sees a partial blob and a crash leaves no half file.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)


class BlobKeyError(ValueError):
    """A blob key that is empty, absolute, or escapes the store (``..``)."""


class BlobNotFound(FileNotFoundError):
    """No blob under the key."""


class BlobStore:
    """Filesystem blob store rooted at ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)

    def path(self, key: str) -> Path:
        """Absolute path of ``key``; raises ``BlobKeyError`` for keys outside the store."""
        pure = PurePosixPath(key)
        if not key or key.startswith("/") or "\\" in key or \
                any(p in ("..", "", ".") for p in key.split("/")):
            raise BlobKeyError(f"invalid blob key {key!r}")
        if pure.parts[0] == ".tmp":
            raise BlobKeyError(f"invalid blob key {key!r}: .tmp is reserved")
        return self.root.joinpath(*pure.parts)

    def put(self, key: str, data: bytes) -> int:
        """Store ``data`` under ``key`` atomically and durably; returns the byte count."""
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)
        return len(data)

    def get(self, key: str) -> bytes:
        """Bytes stored under ``key``; raises ``BlobNotFound``."""
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def exists(self, key: str) -> bool:
        """True if a blob or a folder of blobs exists under ``key``."""
        return self.path(key).exists()

    def delete_prefix(self, prefix: str) -> None:
        """Remove every blob under ``prefix`` (no error if there is none)."""
        target = self.path(prefix)
        if target.is_dir():
            # Rename first so a concurrent reader sees all or nothing.
            trash = self._tmp / f"trash-{uuid.uuid4().hex}"
            try:
                os.replace(target, trash)
            except FileNotFoundError:
                return
            shutil.rmtree(trash, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

    def temp_dir(self) -> Path:
        """A fresh empty directory on the store's filesystem, for ``publish_dir``."""
        return Path(tempfile.mkdtemp(dir=self._tmp))

    def publish_dir(self, src: Path, prefix: str) -> None:
        """Move the directory ``src`` to ``prefix`` atomically, replacing what was there.

        Exactly one directory remains under ``prefix`` afterwards (the new one).
        """
        dest = self.path(prefix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for root, _dirs, files in os.walk(src):
            for name in files:
                with open(os.path.join(root, name), "rb") as fh:
                    os.fsync(fh.fileno())
        if dest.exists():
            self.delete_prefix(prefix)
        os.replace(src, dest)
        _fsync_dir(dest.parent)

    def size(self, key: str) -> int:
        """Bytes of the blob under ``key``."""
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def get_blob_store() -> BlobStore:
    """The blob store configured by ``MMLOP_BLOB_ROOT``."""
    from service.settings import get_settings

    return BlobStore(get_settings().blob_root)
