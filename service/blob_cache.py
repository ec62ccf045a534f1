"""The S3 store's bounded local read cache, whose entries are pinned while they are read.

An entry is a folder ``<cache_dir>/<name>`` (name: digest of the prefix + version), filled in a
``.tmp-*`` folder and renamed into place, so a reader never sees half an entry. A reader holds
a shared ``flock`` on the entry's folder from the moment it finds (or renames) it until it
closes its :class:`LocalCopy`; eviction takes an exclusive lock without waiting and skips any
entry it cannot lock, so an entry being read (a checkpoint between download and load, a zip
being opened for a download) is never removed, by this process or another sharing the folder.
The cache therefore holds at most ``entries`` folders plus one per reader in flight.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path


class LocalCopy:
    """A local folder holding blobs for reading; ``close()`` (or leaving ``with``) unpins it.

    ``path`` stays readable until then (the filesystem store's own folder has nothing to pin:
    ``fd`` is None).
    """

    def __init__(self, path: Path, fd: int | None = None) -> None:
        self.path, self._fd = path, fd

    def close(self) -> None:
        """Release the pin (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "LocalCopy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _same(fd: int, path: Path) -> bool:
    try:
        st, fst = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev)


def _pin(path: Path) -> int | None:
    """A shared-locked fd of the folder ``path``, or None when it is missing or was replaced."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while an evictor renames it away
    if _same(fd, path):
        return fd
    os.close(fd)
    return None


class ReadCache:
    """Folders under ``root``, at most ``entries`` of them unpinned, least recently used first out."""

    def __init__(self, root: Path, entries: int) -> None:
        self.root, self.entries = root, entries

    def open(self, name: str, fill: Callable[[Path], None]) -> LocalCopy:
        """The pinned entry ``name``, filled by ``fill(folder)`` when absent.

        ``fill`` downloads into the empty folder it is given; what it raises propagates (no
        entry is created). Entries beyond ``entries`` that no reader holds are then evicted.
        """
        entry = self.root / name
        while True:
            fd = _pin(entry)
            if fd is not None:
                os.utime(entry)
                break
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_SH)  # pinned before it is visible under its name
            try:
                fill(tmp)
            except BaseException:
                os.close(fd)
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            try:
                os.rename(tmp, entry)
                break
            except OSError as err:
                os.close(fd)
                shutil.rmtree(tmp, ignore_errors=True)
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # a concurrent reader renamed the same entry in place first: pin that one, or, if
                # it was evicted meanwhile, fill it again (checking exists() here raced with that)
        copy = LocalCopy(entry, fd)
        self.prune()
        return copy

    def prune(self) -> None:
        """Evict the least recently used unpinned entries until at most ``entries`` remain."""
        found = []
        for p in self.root.iterdir():
            if p.name.startswith(".tmp-"):
                continue
            try:
                found.append((p.stat().st_mtime, p))
            except FileNotFoundError:
                continue
        found.sort()
        excess = len(found) - self.entries
        for _mtime, p in found:
            if excess <= 0:
                break
            if self._evict(p):
                excess -= 1

    def _evict(self, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a reader holds it
            if not _same(fd, path):
                return False
            trash = self.root / f".tmp-trash-{uuid.uuid4().hex}"
            os.rename(path, trash)
        finally:
            os.close(fd)
        shutil.rmtree(trash, ignore_errors=True)
        return True
