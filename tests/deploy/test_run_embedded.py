"""scripts/run_embedded.sh (behind `make run`) supervises the API and the worker: migrates first,
starts both, and on Ctrl-C stops both and every process they spawned.

These tests run the real script against stand-in `uvicorn`, `celery` and `alembic` (a fake
interpreter), so the supervision logic is checked without the service; test_make_run.py runs the
real stack.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .proctools import (default_sigint, free_port, kill_session, session_processes, wait_http_ok,
                        wait_session_empty)

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = textwrap.dedent(
    """\
    #!/bin/sh
    # Stand-in interpreter: `-m alembic|uvicorn|celery` and `-c <settings query>`.
    log="$FAKE_LOG"
    if [ "$1" = "-c" ]; then echo fakequeue; exit 0; fi
    module="$2"; shift 2
    echo "$module $*" >> "$log"
    case "$module" in
      alembic) [ "$FAKE_ALEMBIC_FAIL" = 1 ] && exit 3; touch var/migrated; exit 0 ;;
      uvicorn) exec "$REAL_PYTHON" "$FAKE_DIR/fake_api.py" "$@" ;;
      celery) exec "$REAL_PYTHON" "$FAKE_DIR/fake_worker.py" "$@" ;;
    esac
    exit 9
    """
)

FAKE_API = textwrap.dedent(
    """\
    import http.server, os, sys
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    if os.environ.get("FAKE_API_CRASH") == "1":
        sys.exit(4)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404); self.end_headers()
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)

FAKE_WORKER = textwrap.dedent(
    """\
    import os, signal, subprocess, sys, time
    # Like celery's prefork pool: a child process that must not outlive the worker.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if os.environ.get("FAKE_WORKER_STUBBORN") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        time.sleep(1)
    """
)


@pytest.fixture
def fake_repo(tmp_path):
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "run_embedded.sh", root / "scripts")
    for stub in ("api/main.py", "worker/celery_app.py", "alembic.ini"):
        (root / stub).parent.mkdir(parents=True, exist_ok=True)
        (root / stub).write_text("")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "python").write_text(FAKE_PYTHON)
    (fake / "python").chmod(0o755)
    (fake / "fake_api.py").write_text(FAKE_API)
    (fake / "fake_worker.py").write_text(FAKE_WORKER)
    return root, fake


def _start(root: Path, fake: Path, port: int, **extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(
        PYTHON=str(fake / "python"), REAL_PYTHON=sys.executable, FAKE_DIR=str(fake),
        FAKE_LOG=str(fake / "calls.log"), MMLOP_PORT=str(port), MMLOP_STOP_TIMEOUT="3",
    )
    env.update(extra)
    return subprocess.Popen(
        [str(root / "scripts" / "run_embedded.sh")], cwd=root, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint,
    )


def _wait_for_api_and_worker(proc: subprocess.Popen, port: int) -> None:
    """Block until the fake API answers /healthz and the fake worker process exists."""
    wait_http_ok(f"http://127.0.0.1:{port}/healthz", 30, alive=lambda: proc.poll() is None)
    deadline = time.monotonic() + 10
    while not any("fake_worker.py" in c for c in session_processes(proc.pid).values()):
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.parametrize("stubborn", [False, True], ids=["graceful", "needs-sigkill"])
def test_ctrl_c_stops_api_worker_and_their_children(fake_repo, stubborn):
    root, fake = fake_repo
    port = free_port()
    proc = _start(root, fake, port, FAKE_WORKER_STUBBORN="1" if stubborn else "0")
    sid = proc.pid
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", 30, alive=lambda: proc.poll() is None)
        markers = ("fake_api.py", "fake_worker.py", "time.sleep(600)")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            before = session_processes(sid)
            if all(any(m in c for c in before.values()) for m in markers):
                break
            time.sleep(0.1)
        assert any("fake_api.py" in c for c in before.values()), before
        assert any("fake_worker.py" in c for c in before.values()), before
        assert any("time.sleep(600)" in c for c in before.values()), before

        calls = (fake / "calls.log").read_text().splitlines()
        assert calls[0] == "alembic upgrade head"  # migrations run before anything starts
        assert (root / "var" / "migrated").exists()
        # the two workers start in the background, so calls.log may list either first
        worker_call = next(c for c in calls if c.startswith("celery ") and "--pool threads" not in c)
        assert "-A worker.celery_app worker --concurrency 1 -Q fakequeue" in worker_call
        # the light webhook worker: its own queue, threads (docs/SERVICE.md "Webhooks")
        assert any(c.startswith("celery ") and "--pool threads" in c and "-Q fakequeue" in c
                   for c in calls), calls
        api_call = next(c for c in calls if c.startswith("uvicorn "))
        assert api_call.startswith(f"uvicorn api.main:app --host 127.0.0.1 --port {port}")

        os.killpg(sid, signal.SIGINT)  # what the terminal does on Ctrl-C
        started = time.monotonic()
        rc = proc.wait(timeout=30)
        left = wait_session_empty(sid, 5)
        assert not left, f"orphans after Ctrl-C: {left}"
        assert rc == 130
        output = proc.stdout.read()
        assert "stopping api worker" in output
        # A worker ignoring SIGTERM is killed after MMLOP_STOP_TIMEOUT, and only then.
        assert ("sending SIGKILL" in output) == stubborn
        assert time.monotonic() - started < 20
    finally:
        kill_session(sid)
        proc.stdout.close()


def test_second_ctrl_c_kills_at_once(fake_repo):
    root, fake = fake_repo
    port = free_port()
    proc = _start(root, fake, port, FAKE_WORKER_STUBBORN="1", MMLOP_STOP_TIMEOUT="60")
    sid = proc.pid
    try:
        _wait_for_api_and_worker(proc, port)
        os.killpg(sid, signal.SIGINT)
        time.sleep(1)
        assert proc.poll() is None  # waiting for the stubborn worker's grace period
        os.killpg(sid, signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert not wait_session_empty(sid, 5)
        assert "second signal" in proc.stdout.read()
    finally:
        kill_session(sid)
        proc.stdout.close()


def test_one_child_dying_stops_the_other(fake_repo):
    root, fake = fake_repo
    proc = _start(root, fake, free_port(), FAKE_API_CRASH="1")
    try:
        rc = proc.wait(timeout=30)
        assert rc != 0
        assert not wait_session_empty(proc.pid, 5)
        assert "api exited" in proc.stdout.read()
    finally:
        kill_session(proc.pid)
        proc.stdout.close()


def test_failed_migration_starts_nothing(fake_repo):
    root, fake = fake_repo
    proc = _start(root, fake, free_port(), FAKE_ALEMBIC_FAIL="1")
    try:
        assert proc.wait(timeout=30) == 3
        calls = (fake / "calls.log").read_text().splitlines()
        assert calls == ["alembic upgrade head"]
    finally:
        kill_session(proc.pid)
        proc.stdout.close()


@pytest.fixture
def sigint_ignored():
    """This test run ignores SIGINT, as under `nohup make test &` (a shell without job control
    starts background jobs with SIGINT and SIGQUIT ignored, and exec keeps that)."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def test_ctrl_c_still_stops_everything_when_the_test_run_ignores_sigint(fake_repo, sigint_ignored):
    """The processes a test sends Ctrl-C must start with SIGINT at its default, or nothing stops
    (bash cannot even trap a signal that was ignored when it started)."""
    root, fake = fake_repo
    port = free_port()
    proc = _start(root, fake, port)
    sid = proc.pid
    try:
        _wait_for_api_and_worker(proc, port)
        os.killpg(sid, signal.SIGINT)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("Ctrl-C was ignored: the script inherited SIGINT=ignore from the test run")
        assert rc == 130 and not wait_session_empty(sid, 5)
    finally:
        kill_session(sid)
        proc.stdout.close()


def test_make_test_runs_only_the_given_file():
    """`make test PYTEST_ARGS=tests/x.py` runs that file only (the Makefile used to append `tests`)."""
    out = subprocess.run(["make", "-o", "venv", "-o", "services", "test",
                          "PYTEST_ARGS=--collect-only -q tests/deploy/test_compose.py"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    collected = [line for line in out.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("tests/deploy/test_compose.py::") for line in collected), collected
    # Without a path, pytest's testpaths (pyproject.toml) still makes it the whole of tests/.
    dry = subprocess.run(["make", "-n", "-o", "venv", "-o", "services", "test", "PYTEST_ARGS=-m 'not slow'"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "-m 'not slow'" in dry and not dry.rstrip().split("||")[0].rstrip().endswith(" tests")


def test_make_test_runs_in_two_xdist_workers_unless_told_otherwise():
    """`make test` spreads the files over 2 pytest-xdist workers; PYTEST_WORKERS=0 runs one process."""
    def dry(*args: str) -> str:
        out = subprocess.run(["make", "-n", "-o", "venv", "-o", "services", "test", *args], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
        return next(line for line in out.splitlines() if " -m pytest " in line)

    assert " -n 2 --dist loadfile " in dry()
    assert " -n 3 --dist loadfile " in dry("PYTEST_WORKERS=3")
    for off in ("PYTEST_WORKERS=0", "PYTEST_WORKERS=", "PYTEST_WORKERS= 0 "):
        assert " -n " not in dry(off) and "--dist" not in dry(off), off


def test_make_run_calls_the_supervisor_with_the_venv_python():
    out = subprocess.run(["make", "-n", "-o", "venv", "run"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "scripts/run_embedded.sh" in out
    assert 'PYTHON=".venv/bin/python"' in out


def test_relayed_sigterm_keeps_the_stop_graceful(fake_repo):
    """Regression: a group SIGTERM (make relays it to the script as a second TERM) skipped the
    graceful stop and SIGKILLed everything; only a second Ctrl-C escalates now."""
    root, fake = fake_repo
    port = free_port()
    proc = _start(root, fake, port)
    sid = proc.pid
    try:
        _wait_for_api_and_worker(proc, port)
        os.killpg(sid, signal.SIGTERM)
        time.sleep(0.2)
        os.kill(sid, signal.SIGTERM)  # the relayed copy
        assert proc.wait(timeout=20) == 143
        assert not wait_session_empty(sid, 5)
        output = proc.stdout.read()
        assert "stopping api worker" in output and "killing everything" not in output
        assert "sending SIGKILL" not in output
    finally:
        kill_session(sid)
        proc.stdout.close()
