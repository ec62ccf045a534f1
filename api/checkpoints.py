"""Local paths of a succeeded adaptation's checkpoint, read through the blob store.

The filesystem store answers its own folder; the S3 store downloads into its bounded local
cache, keyed by the checkpoint's prefix and the job's ``attempt``, so a deleted or retrained
adapter is never served from a stale entry (a deleted one answers 404 before this is reached).
Both answer a pinned ``LocalCopy``: the cache does not evict it before the caller closes it,
so a checkpoint cannot vanish between its download and its load (issue 10 fresh-user item 2).
"""

from __future__ import annotations

from api.problem import ProblemError
from service.blob_cache import LocalCopy
from service.blobs import BlobNotFound
from service.jobs import checkpoint_prefix

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # mmlop_core.checkpoint


def _local(blobs, tenant_id: str, job_id: str, attempt: int, sub: str, kind: str,
           names: tuple[str, ...]) -> LocalCopy:
    prefix = checkpoint_prefix(tenant_id, job_id)
    try:
        return blobs.local_dir(prefix + sub, names, str(attempt))
    except BlobNotFound as exc:
        name = str(exc)[len(prefix) + 1:] if str(exc).startswith(prefix + "/") else str(exc)
        raise ProblemError(409, f"checkpoint object {name} of adaptation {job_id} is missing "
                           "from the blob store", kind=kind, reason="missing",
                           field=name) from exc


def adapter_dir(blobs, tenant_id: str, job_id: str, attempt: int) -> LocalCopy:
    """The job's checkpoint ``adapter/`` folder, local and pinned until closed (blocking: call
    off the event loop; close it once the adapter is loaded).

    Raises ``ProblemError`` 409 naming the missing object (e.g. ``adapter/adapter_model.safetensors``),
    ``BlobStoreError`` (503) when the store is unreachable.
    """
    return _local(blobs, tenant_id, job_id, attempt, "/adapter", "adapter-not-ready", ADAPTER_FILES)


def adapter_zip(blobs, tenant_id: str, job_id: str, attempt: int) -> LocalCopy:
    """The local, pinned folder holding the job's ``adapter.zip`` (same errors as
    ``adapter_dir``)."""
    return _local(blobs, tenant_id, job_id, attempt, "", "adapter-not-ready", ("adapter.zip",))
