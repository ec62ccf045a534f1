"""api/checkpoints.py: the checkpoint's file names match the library's, and a missing object
is a 409 that names it (filesystem store; the S3 case is in test_api_s3_e2e.py)."""

from __future__ import annotations

import pytest

from api.checkpoints import ADAPTER_FILES, adapter_dir, adapter_zip
from api.problem import ProblemError
from service.blobs import BlobStore
from service.jobs import checkpoint_prefix


def test_adapter_files_are_the_library_names():
    from mmlop_core.checkpoint import CONFIG_FILE, WEIGHTS_FILE

    assert ADAPTER_FILES == (CONFIG_FILE, WEIGHTS_FILE)


def test_missing_objects_are_named(tmp_path):
    blobs = BlobStore(tmp_path)
    prefix = checkpoint_prefix("t1", "j1")
    blobs.put(f"{prefix}/adapter/adapter_config.json", b"{}")
    with pytest.raises(ProblemError) as info:
        adapter_dir(blobs, "t1", "j1", 1)
    assert info.value.status == 409
    assert "adapter/adapter_model.safetensors of adaptation j1" in info.value.detail
    with pytest.raises(ProblemError, match="adapter.zip"):
        adapter_zip(blobs, "t1", "j1", 1)
    blobs.put(f"{prefix}/adapter/adapter_model.safetensors", b"w")
    blobs.put(f"{prefix}/adapter.zip", b"z")
    with adapter_dir(blobs, "t1", "j1", 1) as local:
        assert local.path == blobs.path(f"{prefix}/adapter")
    with adapter_zip(blobs, "t1", "j1", 1) as local:
        assert (local.path / "adapter.zip").read_bytes() == b"z"
