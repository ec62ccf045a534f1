"""S3-compatible blob store (AWS S3, MinIO, ...) with the filesystem store's interface.

``s3://bucket/prefix``: every key is stored as ``prefix/<key>`` after ``check_key``, so no key
leaves the prefix. Endpoint, region and credentials come from the standard AWS settings
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ...).

Guarantees: an S3 PUT (single or multipart, completed) is atomic, so a reader sees a whole
object or none; a failed multipart upload is aborted by the transfer manager and stale ones by
``sweep_temp`` (only after this process has seen them for ``blob_temp_max_age_s``; an S3
lifecycle rule ``AbortIncompleteMultipartUpload`` is the long-stop). Uploads stream from a
file object in 8 MiB parts (multipart above 8 MiB).
``publish_dir`` uploads every file, then removes keys of the old version that the new one lacks;
a checkpoint is read only after its job row says succeeded, which is written after publishing.
``local_dir`` downloads into a bounded local cache whose entries are keyed by prefix + version
(the job's attempt), written to a temp folder and renamed, so readers never see half entries,
and pinned while read (``service/blob_cache.py``), so eviction never removes one in use.
Every client or server failure is raised as ``BlobStoreError`` (an ``OSError``, errno EIO);
a missing object as ``BlobNotFound``.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.blob_cache import LocalCopy, ReadCache
from service.blobs import (OWNED_ROOT, BlobInfo, BlobNotFound, BlobStoreConfigError,
                           BlobStoreError, check_key, due_temp, parse_blob_url)

logger = logging.getLogger(__name__)

_PART = 8 * 1024 * 1024
_TRANSFER = TransferConfig(multipart_threshold=_PART, multipart_chunksize=_PART,
                           max_concurrency=4)
_MISSING = {"404", "NoSuchKey", "NotFound"}
# Store-level refusals: the bucket, the credentials or the permissions, never one object.
_STORE_LEVEL = {"NoSuchBucket", "AccessDenied", "403", "InvalidAccessKeyId",
                "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AllAccessDisabled",
                "InvalidBucketName", "PermanentRedirect", "301", "400"}


class _Counting:
    """A read-only view of ``head`` then a stream, counting bytes read (never closes the stream)."""

    def __init__(self, src: BinaryIO, head: bytes = b"") -> None:
        self.src, self.head, self.n = src, head, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data, self.head = self.head + self.src.read(), b""
        elif len(self.head) >= size:
            data, self.head = self.head[:size], self.head[size:]
        else:
            data, self.head = self.head + _read_up_to(self.src, size - len(self.head)), b""
        self.n += len(data)
        return data


def _read_up_to(src: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes of ``src`` (fewer only at its end)."""
    parts, left = [], size
    while left > 0 and (chunk := src.read(left)):
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class S3BlobStore:
    """Blob store on the bucket and key prefix of ``url`` (``s3://bucket[/prefix]``)."""

    def __init__(self, url: str, cache_dir: Path, cache_entries: int = 256) -> None:
        _scheme, self.bucket, self.prefix = parse_blob_url(url)  # BlobKeyError if invalid
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.client = boto3.client("s3", region_name=region, config=Config(
            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60,
            max_pool_connections=32))  # > blob_batch.PUT_WORKERS concurrent PUTs
        self.cache_dir = cache_dir
        self.cache_entries = cache_entries

    @contextmanager
    def _translate(self, key: str) -> Iterator[None]:
        """Map botocore errors to ``BlobNotFound`` (missing ``key`` in an existing bucket),
        ``BlobStoreConfigError`` (bucket missing, credentials or permissions refused) or
        ``BlobStoreError`` (unreachable, other server errors)."""
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING and (code == "NoSuchKey" or self._bucket_ok()):
                raise BlobNotFound(key) from exc  # a HEAD's bare 404 is ambiguous: probed
            if code in _MISSING or code in _STORE_LEVEL:
                raise BlobStoreConfigError(
                    errno.EIO, f"object store refused bucket {self.bucket!r} ({code or 'unknown'}"
                    f" on {key}): check MMLOP_BLOB_URL and the credentials") from exc
            raise BlobStoreError(errno.EIO, f"object store error {code or 'unknown'} on {key}"
                                 ) from exc
        except BotoCoreError as exc:
            raise BlobStoreError(errno.EIO, f"object store unreachable: {exc}") from exc

    def _bucket_ok(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except ClientError:
            return False
        except BotoCoreError as exc:
            raise BlobStoreError(errno.EIO, f"object store unreachable: {exc}") from exc

    def probe(self) -> None:
        """Cheap readiness check (one HEAD of the bucket); raises ``BlobStoreError`` or
        ``BlobStoreConfigError`` naming the bucket."""
        with self._translate(self.bucket):
            self.client.head_bucket(Bucket=self.bucket)

    def _k(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def put(self, key: str, data: bytes) -> int:
        """Store ``data`` under ``key`` (one atomic object); returns the byte count."""
        return self.put_stream(key, BytesIO(data))

    def put_stream(self, key: str, src: BinaryIO) -> int:
        """Stream ``src`` to ``key``: one PutObject up to 8 MiB, 8 MiB multipart parts above
        (the transfer manager's threads cost more than a small PUT); byte count."""
        full = self._k(key)
        head = _read_up_to(src, _PART + 1)
        if len(head) <= _PART:
            with self._translate(key):
                self.client.put_object(Bucket=self.bucket, Key=full, Body=head)
            return len(head)
        counted = _Counting(src, head)
        with self._translate(key):
            self.client.upload_fileobj(counted, self.bucket, full, Config=_TRANSFER)
        return counted.n

    def get(self, key: str) -> bytes:
        """Bytes stored under ``key``; raises ``BlobNotFound``."""
        with self._translate(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()

    def size(self, key: str) -> int:
        """Bytes of the blob under ``key``; raises ``BlobNotFound``."""
        with self._translate(key):
            return int(self.client.head_object(Bucket=self.bucket, Key=self._k(key))["ContentLength"])

    def exists(self, key: str) -> bool:
        """True if a blob or a folder of blobs exists under ``key``."""
        try:
            self.size(key)
            return True
        except BlobNotFound:
            return next(self.list(key), None) is not None

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Every blob under the folder ``prefix`` (recursively)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._k(prefix) + "/")
        with self._translate(prefix):
            for page in pages:
                for obj in page.get("Contents", []):
                    yield BlobInfo(self._rel(obj["Key"]), int(obj["Size"]),
                                   obj["LastModified"].timestamp())

    def delete_prefix(self, prefix: str) -> None:
        """Remove the blob ``prefix`` and every blob under it (no error if there is none)."""
        keys = [self._k(prefix)] + [self._k(b.key) for b in self.list(prefix)]
        self._delete_keys(keys, prefix)

    def _delete_keys(self, keys: list[str], what: str) -> None:
        """DeleteObjects in batches of 1000 keys (the API's maximum), up to 4 batches at a time."""
        batches = [keys[i:i + 1000] for i in range(0, len(keys), 1000)]
        if len(batches) <= 1:
            for batch in batches:
                self._delete_batch(batch, what)
            return
        with ThreadPoolExecutor(min(4, len(batches)), thread_name_prefix="blob-delete") as pool:
            for done in [pool.submit(self._delete_batch, batch, what) for batch in batches]:
                done.result()

    def _delete_batch(self, keys: list[str], what: str) -> None:
        with self._translate(what):
            out = self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in keys], "Quiet": True})
        if out.get("Errors"):
            raise BlobStoreError(errno.EIO, f"object store refused to delete under {what}")

    def temp_dir(self) -> Path:
        """A fresh empty local directory, for ``publish_dir``."""
        return Path(tempfile.mkdtemp(prefix="mmlop-publish-"))

    def publish_dir(self, src: Path, prefix: str) -> None:
        """Upload the local directory ``src`` to ``prefix``, replacing what was there; removes src.

        Each object is replaced atomically; keys of the old version absent from ``src`` are
        deleted afterwards, so exactly the new files remain under ``prefix``.
        """
        old = {b.key for b in self.list(prefix)}
        new = set()
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(src).as_posix()}"
            with self._translate(key):
                self.client.upload_file(str(path), self.bucket, self._k(key), Config=_TRANSFER)
            new.add(key)
        self._delete_keys([self._k(k) for k in sorted(old - new)], prefix)
        shutil.rmtree(src, ignore_errors=True)

    def local_dir(self, prefix: str, names: Iterable[str], version: str) -> LocalCopy:
        """A pinned local cache folder holding ``prefix/<name>`` for each name, downloaded once.

        The entry is keyed by ``prefix`` and ``version`` (pass the job's attempt, so a
        retrained adapter gets a fresh entry) and is not evicted before the returned
        ``LocalCopy`` is closed (``service/blob_cache.py``). Raises ``BlobNotFound`` naming the
        first missing key, ``BlobStoreError`` if the store is unreachable. Unpinned entries
        beyond ``cache_entries`` are removed, least recently used first.
        """
        check_key(prefix)
        names = list(names)
        digest = hashlib.sha256(f"{self.bucket}/{self._k(prefix)}".encode()).hexdigest()[:24]

        def fill(folder: Path) -> None:
            for name in names:
                key = f"{prefix}/{name}"
                with self._translate(key):
                    self.client.download_file(self.bucket, self._k(key), str(folder / name),
                                              Config=_TRANSFER)

        return ReadCache(self.cache_dir, self.cache_entries).open(f"{digest}-{version}", fill)

    def sweep_temp(self, seen: dict[str, float], now: float, max_age_s: float) -> list[str]:
        """Abort multipart uploads under ``<prefix>/tenants/`` first seen ``max_age_s`` ago.

        ``seen``/``now``: the caller's memory and monotonic clock (``due_temp``); the store's
        ``Initiated`` dates are never trusted (other clock; moto reports 2010). Nothing outside
        the service's own folder is listed, so other applications' uploads in the bucket stay.
        Returns ``multipart:<key>`` of each aborted upload.
        """
        present: dict[str, dict] = {}
        with self._translate(".tmp"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._k(OWNED_ROOT) + "/")
            for page in pages:
                for up in page.get("Uploads", []):
                    present[f"{up['Key']}@{up['UploadId']}"] = up
        removed = []
        for ident in due_temp(seen, {i: up["Key"] for i, up in present.items()}, now, max_age_s):
            up = present[ident]
            with self._translate(".tmp"):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"],
                                                   UploadId=up["UploadId"])
            removed.append(f"multipart:{self._rel(up['Key'])}")
        return removed
