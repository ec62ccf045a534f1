"""Blob store contract, run against both backends: the filesystem store and the S3 store on a
real S3 wire-protocol server (moto_server on 127.0.0.1, see tests/conftest.py ``s3_endpoint``).

Atomic writes, key validation, prefix listing and deletion, directory publishing, the local
read cache."""

from __future__ import annotations

import io

import pytest

from service.blobs import (BlobKeyError, BlobNotFound, BlobStore, BlobStoreError,
                           open_blob_store)

BAD_KEYS = ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", ".tmp/x", "a\\b", "a/"]


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    """One store per backend; the S3 one in a fresh bucket under a key prefix."""
    if request.param == "file":
        return BlobStore(tmp_path / "blobs")
    request.getfixturevalue("s3_env")
    from utils.s3 import create_bucket

    bucket = create_bucket(request.getfixturevalue("s3_endpoint"))
    return open_blob_store(f"s3://{bucket}/pre/fix", tmp_path / "cache", cache_entries=2)


class _Failing(io.RawIOBase):
    """A stream that yields ``n`` bytes and then fails, like a client that went away."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.left <= 0:
            raise ConnectionError("client went away")
        k = min(len(buf), self.left)
        buf[:k] = b"x" * k
        self.left -= k
        return k


def test_put_get_roundtrip(store):
    assert store.put("t/a/uploads/000001.png", b"abc") == 3
    assert store.get("t/a/uploads/000001.png") == b"abc"
    assert store.size("t/a/uploads/000001.png") == 3
    assert store.exists("t/a") and store.exists("t/a/uploads/000001.png")
    assert not store.exists("t/b")
    # overwrite replaces whole content
    store.put("t/a/uploads/000001.png", b"xy")
    assert store.get("t/a/uploads/000001.png") == b"xy"
    assert [(b.key, b.size) for b in store.list("t")] == [("t/a/uploads/000001.png", 2)]


def test_no_temp_files_left_behind(tmp_path):
    store = BlobStore(tmp_path)
    store.put("t/a/1", b"abc")
    store.put_stream("t/a/2", io.BytesIO(b"abc"))
    assert list((tmp_path / ".tmp").iterdir()) == []


@pytest.mark.parametrize("key", BAD_KEYS)
def test_rejects_bad_keys(store, key):
    with pytest.raises(BlobKeyError):
        store.put(key, b"x")
    with pytest.raises(BlobKeyError):
        store.get(key)
    with pytest.raises(BlobKeyError):
        store.delete_prefix(key)
    with pytest.raises(BlobKeyError):
        list(store.list(key))
    with pytest.raises(BlobKeyError):
        store.local_dir(key, ["x"], "0")


def test_missing_blob(store):
    with pytest.raises(BlobNotFound):
        store.get("nope/x")
    with pytest.raises(BlobNotFound):
        store.size("nope/x")
    assert list(store.list("nope")) == []


def test_delete_prefix(store):
    store.put("t/a/1", b"1")
    store.put("t/a/sub/2", b"2")
    store.put("t/b/1", b"3")
    store.put("t/ab/1", b"4")  # shares the string prefix "t/a" but is another folder
    store.delete_prefix("t/a")
    assert not store.exists("t/a")
    assert store.get("t/b/1") == b"3" and store.get("t/ab/1") == b"4"
    store.delete_prefix("t/a")  # idempotent
    store.delete_prefix("t/b/1")  # a single blob
    assert not store.exists("t/b/1")


def test_list_is_recursive_and_bounded_to_the_folder(store):
    store.put("t/a/1", b"1")
    store.put("t/a/sub/2", b"22")
    store.put("t/ab/3", b"333")
    assert sorted((b.key, b.size) for b in store.list("t/a")) == [("t/a/1", 1), ("t/a/sub/2", 2)]
    assert all(b.mtime > 0 for b in store.list("t"))


def test_publish_dir_replaces(store):
    first = store.temp_dir()
    (first / "old.txt").write_text("old")
    (first / "both.txt").write_text("1")
    store.publish_dir(first, "t/a/checkpoint")
    second = store.temp_dir()
    (second / "new.txt").write_text("new")
    (second / "sub").mkdir()
    (second / "sub" / "both.txt").write_text("2")
    store.publish_dir(second, "t/a/checkpoint")
    assert sorted(b.key for b in store.list("t/a/checkpoint")) == [
        "t/a/checkpoint/new.txt", "t/a/checkpoint/sub/both.txt"]
    assert store.get("t/a/checkpoint/sub/both.txt") == b"2"
    assert not first.exists() and not second.exists()


def test_big_stream_roundtrip(store):
    data = bytes(range(256)) * (9 * 4096 + 7)  # > 8 MiB: a multipart upload on S3
    assert store.put_stream("t/big.zip", io.BytesIO(data)) == len(data)
    assert store.get("t/big.zip") == data
    store.put_stream("t/small.bin", io.BytesIO(data[:1000]))
    if isinstance(store, BlobStore):
        return
    # S3 (issue 10): above 8 MiB the object went up in parts (a multipart ETag ends in -<parts>),
    # a small one in one PUT.
    def etag(key):
        return store.client.head_object(Bucket=store.bucket, Key=f"{store.prefix}/{key}")["ETag"]

    assert etag("t/big.zip").strip('"').endswith("-2")
    assert "-" not in etag("t/small.bin")


def test_failed_upload_leaves_nothing(store):
    with pytest.raises(Exception):
        store.put_stream("t/half.bin", io.BufferedReader(_Failing(9 * 1024 * 1024)))
    assert not store.exists("t/half.bin")
    with pytest.raises(Exception):
        store.put_stream("t/small.bin", io.BufferedReader(_Failing(1000)))
    assert not store.exists("t/small.bin")


class _Watched:
    """A store whose ``put_stream`` records how many run at once (and can wait for company)."""

    def __init__(self, store, barrier=None, fail_at: str | None = None) -> None:
        import threading

        self.store, self.barrier, self.fail_at = store, barrier, fail_at
        self.lock, self.running, self.most, self.started = threading.Lock(), 0, 0, 0

    def put_stream(self, key, src):
        import time

        with self.lock:
            self.running += 1
            self.started += 1
            self.most = max(self.most, self.running)
        try:
            if self.barrier is not None:
                self.barrier.wait()  # BrokenBarrierError unless 4 PUTs run together
            if key == self.fail_at:
                raise BlobStoreError(5, "object store unreachable")
            time.sleep(0.01)
            return self.store.put_stream(key, src)
        finally:
            with self.lock:
                self.running -= 1


def _items(prefix: str, n: int):
    from contextlib import nullcontext

    return [(f"{prefix}/{i:05d}.png", lambda i=i: nullcontext(io.BytesIO(b"%d" % i)), 5)
            for i in range(n)]


def test_put_all_stores_every_object_with_concurrent_puts(store):
    """Fresh-user item 6: 10,000 images went up one PUT after another (5.4 min on S3)."""
    import threading

    from service.blob_batch import put_all

    watched = _Watched(store, threading.Barrier(4, timeout=10))
    put_all(watched, _items("t/up", 4))  # the four PUTs meet at the barrier: concurrent
    put_all(_Watched(store), _items("t/up", 120), workers=16)
    assert sorted(b.key for b in store.list("t/up")) == [f"t/up/{i:05d}.png" for i in range(120)]
    assert store.get("t/up/00117.png") == b"117"


def test_put_all_failure_leaves_no_put_in_flight(store):
    """All or nothing: put_all raises only once no PUT runs, so removing the prefix then
    leaves no object (a late PUT would otherwise land after the cleanup)."""
    import time

    from service.blob_batch import put_all

    watched = _Watched(store, fail_at="t/f/00030.png")
    with pytest.raises(BlobStoreError):
        put_all(watched, _items("t/f", 200), workers=8)
    assert watched.running == 0 and watched.most > 1
    assert watched.started < 200  # PUTs not begun were dropped
    store.delete_prefix("t/f")
    time.sleep(0.2)
    assert list(store.list("t/f")) == []


def test_put_all_puts_large_objects_one_at_a_time(store):
    """Memory: an S3 PUT up to 8 MiB holds its object, so only small ones run concurrently."""
    from service.blob_batch import SMALL, put_all

    watched = _Watched(store)
    put_all(watched, [(k, o, SMALL + 1) for k, o, _ in _items("t/big", 5)] + _items("t/sm", 30))
    assert watched.most > 1 and len(list(store.list("t/big"))) == 5
    late = _Watched(store)
    put_all(late, [(k, o, SMALL + 1) for k, o, _ in _items("t/big2", 5)])
    assert late.most == 1


def test_delete_prefix_removes_more_than_one_batch(store):
    """S3 DeleteObjects takes at most 1000 keys: 1,001 objects need two batches."""
    from service.blob_batch import put_all

    put_all(store, _items("t/many", 1001))
    store.put("t/keep/1", b"k")
    store.delete_prefix("t/many")
    assert list(store.list("t/many")) == [] and store.get("t/keep/1") == b"k"


def test_local_dir_reads_named_files(store):
    store.put("t/a/ckpt/x.json", b"{}")
    store.put("t/a/ckpt/w.bin", b"w")
    with store.local_dir("t/a/ckpt", ["x.json", "w.bin"], "1") as local:
        folder = local.path
        assert (folder / "x.json").read_bytes() == b"{}" and (folder / "w.bin").read_bytes() == b"w"
    with pytest.raises(BlobNotFound, match="t/a/ckpt/missing.bin"):
        store.local_dir("t/a/ckpt", ["x.json", "missing.bin"], "2")


def test_s3_cache_is_keyed_by_version_and_bounded(store):
    if isinstance(store, BlobStore):
        pytest.skip("the filesystem store reads in place")
    store.put("t/a/ckpt/w.bin", b"v1")
    with store.local_dir("t/a/ckpt", ["w.bin"], "1") as local:
        assert (local.path / "w.bin").read_bytes() == b"v1"
    store.put("t/a/ckpt/w.bin", b"v2")  # retrained: a new attempt, a new entry
    with store.local_dir("t/a/ckpt", ["w.bin"], "2") as local:
        assert (local.path / "w.bin").read_bytes() == b"v2"
    store.put("t/b/ckpt/w.bin", b"b")
    store.local_dir("t/b/ckpt", ["w.bin"], "1").close()
    entries = [p for p in store.cache_dir.iterdir() if not p.name.startswith(".tmp-")]
    assert len(entries) == 2  # cache_entries=2: the least recently used went
    assert not [p for p in store.cache_dir.iterdir() if p.name.startswith(".tmp-")]


def test_s3_cache_never_evicts_an_entry_in_use(store):
    """Fresh-user item 2: entries held by readers (a checkpoint between its download and its
    load) outlive every eviction; the cache passes its bound (2) only by the entries held, and
    the least recently used unheld ones go once they are released."""
    if isinstance(store, BlobStore):
        pytest.skip("the filesystem store reads in place (nothing is evicted)")
    for name in "abcde":
        store.put(f"t/{name}/w.bin", name.encode())
    held = [store.local_dir(f"t/{name}", ["w.bin"], "1") for name in "abc"]
    store.local_dir("t/d", ["w.bin"], "1").close()

    def entries() -> list:
        return [p for p in store.cache_dir.iterdir() if not p.name.startswith(".tmp-")]

    assert [(h.path / "w.bin").read_bytes() for h in held] == [b"a", b"b", b"c"]
    assert len(entries()) == 4  # a, b, c held, d in flight during its own eviction pass
    for h in held:
        h.close()
        h.close()  # idempotent
    store.local_dir("t/e", ["w.bin"], "1").close()
    assert len(entries()) == 2 and not {h.path for h in held} & set(entries())  # d and e


def test_s3_keys_stay_under_the_prefix(store, s3_endpoint):
    if isinstance(store, BlobStore):
        pytest.skip("S3 only")
    import boto3

    store.put("t/a/1", b"1")
    raw = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=store.bucket)["Contents"]]
    assert keys == ["pre/fix/t/a/1"]


def test_s3_store_down_is_a_blob_store_error(s3_env, monkeypatch, tmp_path):
    from service.blobs_s3 import S3BlobStore
    from utils.s3 import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    store = S3BlobStore("s3://nobucket/p", tmp_path / "cache")
    with pytest.raises(BlobStoreError) as info:
        store.put("t/a/1", b"x")
    assert isinstance(info.value, OSError)
    with pytest.raises(BlobStoreError):
        store.local_dir("t/a", ["1"], "0")


def test_open_blob_store_file_url(tmp_path):
    store = open_blob_store(f"file://{tmp_path}/b")
    assert isinstance(store, BlobStore) and store.root == (tmp_path / "b").resolve()


def _start_temp(store, endpoint, key: str) -> None:
    """An upload in progress: an S3 multipart upload of ``key`` (full key), or a temp file."""
    if isinstance(store, BlobStore):
        (store.root / ".tmp" / "upload-in-progress").write_bytes(b"half")
        return
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_multipart_upload(Bucket=store.bucket,
                                                                      Key=key)


def _open_uploads(store, endpoint) -> list[str]:
    import boto3

    out = boto3.client("s3", endpoint_url=endpoint).list_multipart_uploads(Bucket=store.bucket)
    return sorted(u["Key"] for u in out.get("Uploads", []))


def test_sweep_temp_waits_for_its_own_clock_not_the_stores_dates(store, request):
    """moto dates every upload 2010; an upload is aborted only after the sweeper itself has
    seen it for max_age_s (a file still being written restarts its age)."""
    endpoint = request.getfixturevalue("s3_endpoint") if not isinstance(store, BlobStore) else ""
    _start_temp(store, endpoint, "pre/fix/tenants/t/adaptations/a/uploads/000001.png")
    seen: dict[str, float] = {}
    assert store.sweep_temp(seen, 1000.0, 60.0) == []
    assert store.sweep_temp(seen, 1059.0, 60.0) == []
    if isinstance(store, BlobStore):
        import os

        tmp = store.root / ".tmp" / "upload-in-progress"
        with open(tmp, "ab") as fh:
            fh.write(b"more")
        os.utime(tmp, ns=(tmp.stat().st_atime_ns, tmp.stat().st_mtime_ns + 10**9))
        assert store.sweep_temp(seen, 1070.0, 60.0) == []  # changed: its age restarts
        assert store.sweep_temp(seen, 1130.0, 60.0) == [".tmp/upload-in-progress"]
        assert not tmp.exists()
    else:
        assert _open_uploads(store, endpoint) != []
        removed = store.sweep_temp(seen, 1060.0, 60.0)
        assert removed == ["multipart:tenants/t/adaptations/a/uploads/000001.png"]
        assert _open_uploads(store, endpoint) == []
    assert store.sweep_temp(seen, 1200.0, 60.0) == [] and seen == {}  # forgotten once gone


@pytest.mark.parametrize("url_prefix", ["", "/", "/pre"])
def test_s3_sweep_never_touches_other_applications_keys(s3_env, tmp_path, url_prefix):
    """s3://bucket (no prefix) stays valid, but cleanup reaches only the service's own
    ``tenants/`` folder: a foreign upload or object in the same bucket is never touched."""
    import boto3

    from utils.s3 import create_bucket

    bucket = create_bucket(s3_env)
    store = open_blob_store(f"s3://{bucket}{url_prefix}", tmp_path / "cache")
    raw = boto3.client("s3", endpoint_url=s3_env)
    for key in ("other-app/backup.tar", "pre/other-app/backup.tar", "pre-x/tenants/t/x"):
        raw.create_multipart_upload(Bucket=bucket, Key=key)
    raw.put_object(Bucket=bucket, Key="other-app/tenants.txt", Body=b"x")
    own = store._k("tenants/t/adaptations/a/uploads/000001.png")
    raw.create_multipart_upload(Bucket=bucket, Key=own)
    assert store.sweep_temp({}, 0.0, 0.0) == ["multipart:tenants/t/adaptations/a/uploads/000001.png"]
    assert _open_uploads(store, s3_env) == ["other-app/backup.tar", "pre-x/tenants/t/x",
                                            "pre/other-app/backup.tar"]
    assert [b.key for b in store.list("tenants")] == []
    assert raw.head_object(Bucket=bucket, Key="other-app/tenants.txt")["ContentLength"] == 1


BAD_URLS = ["s3://", "s3:///x", "s3://bucket/../x", "s3://b/a//b", "s3://Bad_Bucket!/x",
            "s3://ab/x", "s3://" + "a" * 64, "s3://a..b/x", "s3://192.168.1.1/x", "s3://-ab/x",
            "s3://xn--ab/x", "s3://bucket/.tmp", "ftp://a", "http://x/y", "S3://bucket"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_open_blob_store_rejects_bad_urls(url):
    with pytest.raises(BlobKeyError, match="MMLOP_BLOB_URL"):
        open_blob_store(url)


@pytest.mark.parametrize("url,parsed", [
    ("s3://fresh10", ("s3", "fresh10", "")), ("s3://fresh10/", ("s3", "fresh10", "")),
    ("s3://my.bucket-1/a/b/", ("s3", "my.bucket-1", "a/b")),
    ("file:///data/blobs", ("file", "/data/blobs", ""))])
def test_parse_blob_url_accepts(url, parsed):
    from service.blobs import parse_blob_url

    assert parse_blob_url(url) == parsed


def test_s3_missing_bucket_is_a_store_error_not_a_missing_object(s3_env, tmp_path):
    """A bucket-level 404 (or a bare HEAD 404 in a missing bucket) is a configuration fault
    (``BlobStoreConfigError``, 503), never ``BlobNotFound`` (409 "object missing")."""
    from service.blobs import BlobStoreConfigError
    from service.blobs_s3 import S3BlobStore

    store = S3BlobStore("s3://nosuchbucket10/x", tmp_path / "cache")
    for call in (lambda: store.size("t/a/1"), lambda: store.get("t/a/1"),
                 lambda: store.local_dir("t/a", ["1"], "0"), lambda: store.put("t/a/1", b"x"),
                 store.probe):
        with pytest.raises(BlobStoreConfigError, match="check MMLOP_BLOB_URL"):
            call()


def test_probe(store, s3_env, tmp_path, monkeypatch):
    store.probe()  # the bucket (or folder) is there and writable
    if isinstance(store, BlobStore):
        import shutil

        shutil.rmtree(store.root)
        with pytest.raises(BlobStoreError, match="missing or not writable"):
            store.probe()
