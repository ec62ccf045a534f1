"""Blob store: atomic durable writes, key validation, prefix deletion, directory publishing."""

from __future__ import annotations

import pytest

from service.blobs import BlobKeyError, BlobNotFound, BlobStore


def test_put_get_roundtrip(tmp_path):
    store = BlobStore(tmp_path)
    assert store.put("t/a/uploads/000001.png", b"abc") == 3
    assert store.get("t/a/uploads/000001.png") == b"abc"
    assert store.size("t/a/uploads/000001.png") == 3
    assert store.exists("t/a")
    # overwrite replaces whole content, no temp files left behind
    store.put("t/a/uploads/000001.png", b"xy")
    assert store.get("t/a/uploads/000001.png") == b"xy"
    assert list((tmp_path / ".tmp").iterdir()) == []


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b",
                                 ".tmp/x", "a\\b"])
def test_rejects_bad_keys(tmp_path, key):
    store = BlobStore(tmp_path)
    with pytest.raises(BlobKeyError):
        store.put(key, b"x")


def test_missing_blob(tmp_path):
    with pytest.raises(BlobNotFound):
        BlobStore(tmp_path).get("nope/x")


def test_delete_prefix(tmp_path):
    store = BlobStore(tmp_path)
    store.put("t/a/1", b"1")
    store.put("t/a/sub/2", b"2")
    store.put("t/b/1", b"3")
    store.delete_prefix("t/a")
    assert not store.exists("t/a")
    assert store.get("t/b/1") == b"3"
    store.delete_prefix("t/a")  # idempotent


def test_publish_dir_replaces_atomically(tmp_path):
    store = BlobStore(tmp_path)
    first = store.temp_dir()
    (first / "old.txt").write_text("old")
    store.publish_dir(first, "t/a/checkpoint")
    second = store.temp_dir()
    (second / "new.txt").write_text("new")
    store.publish_dir(second, "t/a/checkpoint")
    target = store.path("t/a/checkpoint")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert not first.exists() and not second.exists()
