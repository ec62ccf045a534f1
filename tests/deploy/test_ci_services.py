"""scripts/ci_services.sh (run by `make test` / `.ci/run`): starts PostgreSQL and Redis only when
they do not answer, waits for them, and apt-installs a tool only when its command is missing.

Runs against stand-in commands on a private PATH, so the machine's real servers are untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ci_services.sh"
SYSTEM_TOOLS = ("bash", "sh", "ls", "grep", "sleep", "id", "cat", "touch", "mkdir", "printf", "echo", "env")


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "calls.log"
    _fake(bin_dir, "pg_isready", f'echo "pg_isready $*" >> {log}; [ -e {state}/pg ]\n')
    _fake(bin_dir, "pg_ctlcluster", f'echo "pg_ctlcluster $*" >> {log}; touch {state}/pg\n')
    _fake(bin_dir, "redis-cli", f'echo "redis-cli $*" >> {log}; [ -e {state}/redis ] && echo PONG; true\n')
    _fake(bin_dir, "redis-server", f'echo "redis-server $*" >> {log}; touch {state}/redis\n')
    _fake(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}\n')
    _fake(bin_dir, "sudo", 'shift; exec "$@"\n')  # `sudo -n cmd` when not root
    return bin_dir, state, log


def _run(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/root"), "MMLOP_SERVICE_WAIT": "5"}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.skipif(not Path("/etc/postgresql").is_dir(), reason="needs a Debian PostgreSQL layout")
def test_starts_what_is_down_and_installs_what_is_missing(fake_bin):
    bin_dir, state, log = fake_bin
    proc = _run(bin_dir)
    assert proc.returncode == 0, proc.stderr
    calls = _calls(log)
    (install,) = [c for c in calls if c.startswith("apt-get install")]
    assert install.startswith("apt-get install -y --no-install-recommends docker-compose")
    assert {"chromium", "chromium-driver"} <= set(install.split())
    version = sorted(os.listdir("/etc/postgresql"))[0]
    assert f"pg_ctlcluster --skip-systemctl-redirect {version} main start" in calls
    started = next(c for c in calls if c.startswith("redis-server"))
    for option in ("--daemonize yes", "--bind 127.0.0.1 -::1", "--port 6379", '--appendonly no', "--dir /var/lib/redis"):
        assert option in started


def test_leaves_running_services_and_present_tools_alone(fake_bin):
    bin_dir, state, log = fake_bin
    (state / "pg").touch()
    (state / "redis").touch()
    for tool in ("docker-compose", "chromium", "chromedriver"):
        _fake(bin_dir, tool, "exit 0\n")
    proc = _run(bin_dir)
    assert proc.returncode == 0, proc.stderr
    calls = _calls(log)
    assert not [c for c in calls if c.startswith(("apt-get", "pg_ctlcluster", "redis-server"))], calls


def test_fails_when_a_service_never_answers(fake_bin):
    bin_dir, state, log = fake_bin
    (state / "pg").touch()
    _fake(bin_dir, "docker-compose", "exit 0\n")
    _fake(bin_dir, "redis-server", "exit 0\n")  # "starts" but never answers
    proc = _run(bin_dir)
    assert proc.returncode != 0
    assert "Redis did not answer" in proc.stderr
