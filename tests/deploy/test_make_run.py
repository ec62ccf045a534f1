"""`make run` (README Quickstart) against the real service: offline tiny backbone, embedded
SQLite + server-less broker in a temporary copy of the repository, API answers /healthz, and
Ctrl-C stops the API and the worker with nothing left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .proctools import (default_sigint, free_port, kill_session, session_processes, wait_http_ok,
                        wait_session_empty)

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 240
STOP_TIMEOUT_S = 60

pytestmark = pytest.mark.slow


@pytest.fixture
def repo_copy(tmp_path):
    """The working tree without .venv, var/, .git and tests (its own var/ is the MMLOP var dir)."""
    dest = tmp_path / "repo"
    shutil.copytree(
        REPO, dest, symlinks=True,
        ignore=shutil.ignore_patterns(".venv", "var", ".git", "tests", "__pycache__", "*.egg-info",
                                      "build", "dist", ".pytest_cache", ".env"),
    )
    return dest


def test_make_run_serves_and_stops_cleanly_on_ctrl_c(repo_copy, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(
        MMLOP_BACKBONE="mmlop-tiny", MMLOP_PRETRAINED="none", MMLOP_PORT=str(port),
        MMLOP_STOP_TIMEOUT="20", HF_HUB_OFFLINE="1",
    )
    venv = Path(sys.executable).parent.parent  # the venv running the tests; `-o venv`: no reinstall
    log_path = tmp_path / "make_run.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        ["make", "-o", "venv", "run", f"VENV={venv}"], cwd=repo_copy, env=env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=default_sigint,
    )
    sid = proc.pid
    output = lambda: log_path.read_text(errors="replace")[-6000:]
    try:
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/healthz", STARTUP_TIMEOUT_S, alive=lambda: proc.poll() is None)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{exc}\n--- make run output ---\n{output()}")
        assert (repo_copy / "var" / "mmlop.db").is_file(), "migrations did not create the SQLite default"

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the worker may still be booting
            running = session_processes(sid)
            if any("celery" in c and "worker.celery_app" in c for c in running.values()):
                break
            time.sleep(0.5)
        running = session_processes(sid)
        assert any("uvicorn" in c and "api.main:app" in c for c in running.values()), running
        assert any("celery" in c and "worker.celery_app" in c for c in running.values()), running
        assert proc.poll() is None, output()

        os.killpg(sid, signal.SIGINT)  # Ctrl-C reaches the terminal's foreground group: make + script
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run still running {STOP_TIMEOUT_S}s after Ctrl-C\n{output()}")
        left = wait_session_empty(sid, 10)
        assert not left, f"orphans after Ctrl-C: {left}\n{output()}"
        assert "sending SIGKILL" not in output(), "API or worker ignored SIGTERM:\n" + output()
    finally:
        kill_session(sid)
        log.close()
