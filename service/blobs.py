"""Durable blob store: the filesystem backend here, the S3 one in ``service/blobs_s3.py``.

Keys are relative POSIX paths such as ``tenants/<t>/adaptations/<id>/uploads/000001.png``;
``check_key`` rejects empty, absolute, ``..``/``.``/empty-part and ``.tmp/`` keys for every
backend, so no key escapes the store (or the tenant folder it was built under).
Every write goes to a temporary file in the same filesystem, is fsynced, then renamed into
place (``os.replace``), so a reader never sees a partial blob and a crash leaves no half file.
The backend is chosen by ``MMLOP_BLOB_URL`` (``file:///data/blobs`` or ``s3://bucket/prefix``;
unset: ``file://`` + ``MMLOP_BLOB_ROOT``), see ``open_blob_store``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from service.blob_cache import LocalCopy

logger = logging.getLogger(__name__)


class BlobKeyError(ValueError):
    """A blob key that is empty, absolute, or escapes the store (``..``)."""


class BlobNotFound(FileNotFoundError):
    """No blob under the key (``str(exc)`` is the key)."""


class BlobStoreError(OSError):
    """The blob store could not be reached or refused an operation (errno ``EIO``)."""


class BlobStoreConfigError(BlobStoreError):
    """The store refuses the configured bucket itself (missing, wrong credentials, no
    permission): a configuration fault, never a missing object."""


# The only top-level folder the service writes (``tenants/<t>/adaptations/<id>/...``): sweeps
# touch nothing else, so another application's keys in the same bucket (or an ``s3://bucket``
# URL without prefix) are never listed, aborted or deleted by cleanup.
OWNED_ROOT = "tenants"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def parse_blob_url(url: str) -> tuple[str, str, str]:
    """``(scheme, location, prefix)`` of a blob store URL, validated; raises ``BlobKeyError``.

    ``file://<path>``: location is the path (empty: the cwd), prefix "". ``s3://bucket[/prefix]``:
    the bucket must follow S3's naming rules (3-63 characters of lowercase letters, digits,
    dots and hyphens, starting and ending with a letter or digit, no ``..``, not an IPv4
    address, not ``xn--``/``sthree-`` prefixed nor ``-s3alias``/``--ol-s3`` suffixed); the
    prefix (one trailing ``/`` allowed) must be a valid key (``check_key``: no ``..``, ``.``,
    empty parts). Every message names ``MMLOP_BLOB_URL``.
    """
    def bad(why: str) -> BlobKeyError:
        return BlobKeyError(f"MMLOP_BLOB_URL {url!r}: {why}")

    if url.startswith("file://"):
        return "file", url[len("file://"):], ""
    if not url.startswith("s3://"):
        raise bad("expected file://<path> or s3://<bucket>[/<prefix>]")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise bad("names no bucket (s3://<bucket>[/<prefix>])")
    if (not _BUCKET.match(bucket) or ".." in bucket or _IPV4.match(bucket)
            or bucket.startswith(("xn--", "sthree-"))
            or bucket.endswith(("-s3alias", "--ol-s3"))):
        raise bad(f"invalid bucket name {bucket!r} (S3 bucket names: 3-63 lowercase letters, "
                  "digits, dots or hyphens, starting and ending with a letter or digit)")
    prefix = prefix[:-1] if prefix.endswith("/") else prefix
    if prefix:
        try:
            check_key(prefix)
        except BlobKeyError:
            raise bad(f"invalid key prefix {prefix!r} (no '..', '.', '.tmp' or empty parts)") \
                from None
    return "s3", bucket, prefix


def due_temp(seen: dict[str, float], present: dict[str, str], now: float,
             max_age_s: float) -> list[str]:
    """Ids of temp entries first seen at least ``max_age_s`` ago; updates ``seen`` in place.

    ``seen``: {entry id: first-seen time} kept by the caller across sweeps (its own monotonic
    clock, seconds; never the store's dates, whose clock may differ); ``present``: {id: label}
    of the entries there now. New ids are recorded at ``now``; ids gone are forgotten. An
    entry that changes should change its id, so its age restarts.
    """
    for ident in list(seen):
        if ident not in present:
            del seen[ident]
    for ident in present:
        seen.setdefault(ident, now)
    return [ident for ident in present if now - seen[ident] >= max_age_s]


@dataclass(frozen=True)
class BlobInfo:
    """One stored blob: its key, size in bytes and modification time (Unix seconds)."""

    key: str
    size: int
    mtime: float


def check_key(key: str) -> PurePosixPath:
    """The key as a path; raises ``BlobKeyError`` for keys that could leave the store."""
    if not key or key.startswith("/") or "\\" in key or \
            any(p in ("..", "", ".") for p in key.split("/")):
        raise BlobKeyError(f"invalid blob key {key!r}")
    pure = PurePosixPath(key)
    if pure.parts[0] == ".tmp":
        raise BlobKeyError(f"invalid blob key {key!r}: .tmp is reserved")
    return pure


class BlobStore:
    """Filesystem blob store rooted at ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)

    def path(self, key: str) -> Path:
        """Absolute path of ``key``; raises ``BlobKeyError`` for keys outside the store."""
        return self.root.joinpath(*check_key(key).parts)

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

    def put_stream(self, key: str, src: BinaryIO) -> int:
        """Like ``put`` but copies ``src`` in 64 KiB chunks (never whole in memory, and little
        even with ``blob_batch.PUT_WORKERS`` of them at once); byte count."""
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as fh:
                shutil.copyfileobj(src, fh, 64 * 1024)
                fh.flush()
                os.fsync(fh.fileno())
                size = fh.tell()
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)
        return size

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


    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Every blob under the folder ``prefix`` (recursively, any order)."""
        base = self.path(prefix)
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                rel = Path(full).relative_to(self.root).as_posix()
                yield BlobInfo(rel, st.st_size, st.st_mtime)

    def local_dir(self, prefix: str, names: Iterable[str], version: str) -> LocalCopy:
        """A local directory holding the blobs ``prefix/<name>`` for each name, for reading.

        Here it is the store's own folder, with nothing to pin (``version`` is unused: a
        folder is replaced whole, and only by a retraining or a deletion, never evicted);
        raises ``BlobNotFound`` naming the first missing key.
        """
        folder = self.path(prefix)
        for name in names:
            if not (folder / name).is_file():
                raise BlobNotFound(f"{prefix}/{name}")
        return LocalCopy(folder)

    def sweep_temp(self, seen: dict[str, float], now: float, max_age_s: float) -> list[str]:
        """Remove temp files and folders unchanged since first seen ``max_age_s`` ago.

        ``seen``/``now``: the caller's memory and monotonic clock (``due_temp``); an entry's
        id includes its mtime, so one still being written restarts its age. Returns the
        removed entries as ``.tmp/<name>``.
        """
        present = {}
        for entry in self._tmp.iterdir():
            try:
                present[f"{entry.name}@{entry.stat().st_mtime_ns}"] = entry.name
            except FileNotFoundError:
                continue
        removed = []
        for ident in due_temp(seen, present, now, max_age_s):
            entry = self._tmp / present[ident]
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(f".tmp/{entry.name}")
        return removed

    def probe(self) -> None:
        """Cheap readiness check: the root folder exists and is writable; raises
        ``BlobStoreError`` naming it."""
        if not (self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)
                and os.access(self._tmp, os.W_OK | os.X_OK)):
            raise BlobStoreError(errno.EIO, f"blob folder {self.root} is missing or not writable")


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


_S3_STORES: dict[tuple, object] = {}


def open_blob_store(url: str, cache_dir: Path | None = None, cache_entries: int = 256):
    """The store for ``file:///abs/path``, ``file://rel/path`` or ``s3://bucket[/prefix]``.

    ``cache_dir``/``cache_entries`` bound the S3 backend's local read cache (``local_dir``).
    S3 stores are kept per URL (one thread-safe client each). Raises ``BlobKeyError`` for
    an invalid URL (``parse_blob_url``).
    """
    scheme, location, _prefix = parse_blob_url(url)
    if scheme == "file":
        return BlobStore(location or ".")
    from service.blobs_s3 import S3BlobStore

    cache = Path(cache_dir or "./var/blob-cache").resolve()
    ident = (url, str(cache), cache_entries)
    if ident not in _S3_STORES:
        _S3_STORES[ident] = S3BlobStore(url, cache, cache_entries)
    return _S3_STORES[ident]


def get_blob_store() -> BlobStore:
    """The blob store configured by ``MMLOP_BLOB_URL`` (default ``file://`` + ``blob_root``)."""
    from service.settings import get_settings

    settings = get_settings()
    url = settings.blob_url or f"file://{settings.blob_root}"
    return open_blob_store(url, settings.blob_cache_dir, settings.blob_cache_entries)
