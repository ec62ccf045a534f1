"""API process killed during an upload and during training: no orphaned rows or files.

A SIGKILLed API can leave files of an upload whose row was never inserted, and temp files; the
reconciler removes them after the grace period. The test lists the blob store and the database
and finds them consistent.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from utils.factories import make_tenant
from utils.stack import wait_for_status

from .conftest import make_stack, store_consistent, submit_small

pytestmark = pytest.mark.slow


def _kill_api(stack) -> None:
    proc = stack.procs["api"]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_api_killed_during_upload_and_training_leaves_no_orphans(tmp_path, own_database,
                                                                 redis_broker_url):
    stack = make_stack(tmp_path, own_database, redis_broker_url)
    try:
        stack.migrate()
        stack.start_worker_and_api()
        stack.wait_ready()
        tenant_id, key = make_tenant(own_database)
        with stack.client(key) as c:
            job = submit_small(c, epochs=6)
            deadline = time.monotonic() + 120
            while c.get(f"/adaptations/{job}").json()["status"] == "queued":
                assert time.monotonic() < deadline
                time.sleep(0.2)
        # Kill the API during training and during an upload that is half sent.
        sock = socket.create_connection(("127.0.0.1", stack.port))
        sock.sendall((f"POST /adaptations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                      "Content-Type: multipart/form-data; boundary=zz\r\n"
                      "Content-Length: 2000000\r\n\r\n--zz\r\nContent-Disposition: form-data; "
                      'name="images"; filename="a.png"\r\n\r\n').encode() + b"\0" * 500_000)
        time.sleep(0.5)
        _kill_api(stack)
        sock.close()
        # What a kill between storing uploads and inserting the row leaves behind, and a temp
        # file of an interrupted write (both older than the grace period).
        orphan = stack.blob_root / f"tenants/{tenant_id}/adaptations/0b1e7c1e-dead-4bad-8bad-000000000000"
        (orphan / "uploads").mkdir(parents=True)
        (orphan / "uploads/000000.png").write_bytes(b"half")
        stale_tmp = stack.blob_root / ".tmp" / "tmpkilled"
        stale_tmp.write_bytes(b"partial")
        old = time.time() - 3600
        for path in (orphan, orphan / "uploads", stale_tmp):
            os.utime(path, (old, old))
        stack.start_api()
        stack.wait_ready()
        with stack.client(key) as c:
            body = wait_for_status(c, job, {"succeeded", "failed", "canceled"})
            assert body["status"] == "succeeded" and body["attempt"] == 1, body
            assert [j["id"] for j in c.get("/adaptations").json()["items"]] == [job]
            second = submit_small(c)
            assert wait_for_status(c, second, {"succeeded", "failed"})["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while store_consistent(stack) and time.monotonic() < deadline:
            time.sleep(0.5)  # the reconciler passes every second
        assert store_consistent(stack) == []
        assert "removing tenants/" in stack.log_tail("worker", chars=1_000_000)
    finally:
        stack.stop()
