"""Many small blobs at once: a bounded pool of concurrent PUTs, all or nothing for the caller.

One training upload may hold 10,000 images; stored one PUT after another on S3 that took
5.4 minutes (fresh-user report of issue 10, item 6). ``put_all`` runs up to ``PUT_WORKERS``
PUTs at a time (boto3 clients are thread-safe; the filesystem store's temp file + rename is
too) and returns only when none is in flight, so a caller that removes the job's prefix after a
failure leaves no object behind. Memory: an S3 PUT of an object up to 8 MiB holds it whole, so
only objects up to ``SMALL`` (1 MiB) run concurrently (at most 16 MiB in flight); larger ones go
one at a time afterwards, as before (the filesystem store copies in 64 KiB chunks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from typing import BinaryIO

PUT_WORKERS = 16  # concurrent PUTs of one upload (S3 clients keep 32 connections: see blobs_s3)
SMALL = 1024 * 1024  # bytes: objects up to this size are put concurrently

Opener = Callable[[], AbstractContextManager[BinaryIO]]


def put_all(blobs, items: Sequence[tuple[str, Opener, int]], workers: int = PUT_WORKERS) -> None:
    """Store each ``(key, open, size)`` with ``blobs.put_stream(key, stream)``: those of at most
    ``SMALL`` bytes ``workers`` at a time, then the larger ones one by one.

    ``open()`` gives a fresh stream of the blob's bytes (``ImageItem.open``); streams are read in
    chunks by the store, never whole in memory. On the first failure the PUTs not yet started
    are dropped, the running ones are waited for, and that failure (the first in ``items``
    order among those that failed) is raised: when this returns or raises, no PUT is in flight.

    Raises:
        Whatever ``put_stream`` or ``open`` raised (``BlobStoreError``, ``OSError``, ...).
    """
    def put(key: str, opener: Opener) -> None:
        with opener() as src:
            blobs.put_stream(key, src)

    small = [(key, opener) for key, opener, size in items if size <= SMALL]
    if workers > 1 and len(small) > 1:
        _concurrently(put, small, workers)
        small = []
    for key, opener in small + [(key, opener) for key, opener, size in items if size > SMALL]:
        put(key, opener)


def _concurrently(put: Callable[[str, Opener], None], items: list[tuple[str, Opener]],
                  workers: int) -> None:
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="blob-put")
    try:
        futures = [pool.submit(put, key, opener) for key, opener in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
