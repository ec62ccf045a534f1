"""Disk full in the blob store: the job fails with a clear reason, the checkpoint already there
is untouched (atomic temp-file + rename writes), no temp file is left, and the service carries on.

The blob root is a 16 MiB tmpfs (needs root for ``mount``; skipped otherwise), filled up with a
ballast file after the uploads were stored.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from utils.factories import make_tenant
from utils.stack import wait_for_status

from .conftest import make_stack, store_consistent, submit_small

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_fs(tmp_path):
    """A 16 MiB tmpfs mounted under ``tmp_path``."""
    mnt = tmp_path / "blobs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')[:200]}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_disk_full_fails_the_job_cleanly(tmp_path, own_database, redis_broker_url, tiny_fs):
    stack = make_stack(tmp_path, own_database, redis_broker_url,
                       {"MMLOP_RECONCILE_INTERVAL_S": "0"}, blob_root=tiny_fs)
    try:
        stack.migrate()
        stack.start_worker_and_api()
        stack.wait_ready()
        _, key = make_tenant(own_database)
        with stack.client(key) as c:
            first = submit_small(c)
            assert wait_for_status(c, first, {"succeeded", "failed"})["status"] == "succeeded"
            ckpt = next(tiny_fs.glob(f"tenants/*/adaptations/{first}/checkpoint"))
            before = _digest(ckpt)
            stack.kill_worker()
            second = submit_small(c)  # uploads stored; then the disk fills up
            ballast = tiny_fs / "ballast"
            with open(ballast, "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError:
                    pass
            stack.start_worker()
            body = wait_for_status(c, second, {"succeeded", "failed"})
            assert body["status"] == "failed", body
            assert "No space left on device" in body["error"] or "errno 28" in body["error"], body
            assert _digest(ckpt) == before  # the previous checkpoint is untouched
            assert c.get(f"/adaptations/{first}/checkpoint").status_code == 200
            assert store_consistent(stack) == [], store_consistent(stack)
            os.unlink(ballast)
            third = submit_small(c)  # space is back: the service carries on
            assert wait_for_status(c, third, {"succeeded", "failed"})["status"] == "succeeded"
    finally:
        stack.stop()
