"""The S3 backend's local read cache (service/blob_cache.py): races between readers and eviction."""
from __future__ import annotations

import os
from pathlib import Path

from service import blob_cache
from service.blob_cache import ReadCache


def _fill(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"weights")


def test_an_entry_filled_by_another_reader_then_evicted_before_ours_lands_is_filled_again(tmp_path, monkeypatch):
    """A 500 seen under load (test_cache_eviction_never_breaks_concurrent_reads): our rename fails
    because another reader filled the entry first, and that entry is evicted before we look at it
    again. The open must retry, not raise the rename's OSError."""
    cache = ReadCache(tmp_path / "cache", entries=1)
    entry = cache.root / "adapter-1"
    real_rename = os.rename
    calls = []

    def rename_after_a_concurrent_fill_and_eviction(src, dst):
        calls.append(dst)
        if len(calls) == 1:  # the other reader's copy lands first, and is evicted right after our rename fails
            entry.mkdir()
            _fill(entry)
            try:
                real_rename(src, dst)
            finally:
                for p in entry.iterdir():
                    p.unlink()
                entry.rmdir()
        return real_rename(src, dst)

    monkeypatch.setattr(blob_cache.os, "rename", rename_after_a_concurrent_fill_and_eviction)
    with cache.open("adapter-1", _fill) as copy:
        assert (copy.path / "model.safetensors").read_bytes() == b"weights"
    assert len(calls) == 2  # filled a second time, then renamed in place


def test_a_rename_that_fails_for_another_reason_still_raises(tmp_path, monkeypatch):
    cache = ReadCache(tmp_path / "cache", entries=1)

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(blob_cache.os, "rename", no_space)
    try:
        cache.open("adapter-1", _fill)
    except OSError as err:
        assert err.errno == 28
    else:
        raise AssertionError("the rename's error was swallowed")
    assert [p.name for p in cache.root.iterdir()] == []  # the temporary folder is gone
