"""`mmlop remote adapt DIR --wait` and `mmlop remote classify ID IMAGE...` against the real
embedded service, with MMLOP_URL and MMLOP_API_KEY from the environment; a progress bar when
stderr is a terminal; one-line errors with exit 2 on bad input, never a traceback."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from utils.factories import FIXTURES, make_tenant

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MMLOP = Path(sys.executable).parent / "mmlop"  # the console script of `make venv`
REMOTE = [sys.executable, "-m", "mmlop_client"]  # the same commands without the library


def _env(url: str, key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMLOP_")}
    env.update(MMLOP_URL=url, PYTHONPATH=str(REPO))
    if key is not None:
        env["MMLOP_API_KEY"] = key
    return env


def _run_with_tty_stderr(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``args`` with stderr on a pseudo-terminal; returns (exit status, stdout, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 24 x 120 chars
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=180)
    reader.join(10)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def test_remote_adapt_wait_then_classify(embedded_stack, tmp_path):
    _, key = make_tenant(embedded_stack.database_url)
    env = _env(embedded_stack.base_url, key)
    for name in ("coat", "sandal"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for src in sorted((FIXTURES / "train" / name).iterdir())[:5]:
            shutil.copy(src, tmp_path / "photos" / name / src.name)
    code, out, err = _run_with_tty_stderr(
        [str(MMLOP), "remote", "adapt", str(tmp_path / "photos"), "--wait",
         "--config", '{"epochs": 2, "shots": 4}'], env)
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    assert len(job_id) == 36 and "succeeded" in err
    assert "100%" in err and "steps" not in out  # the bar went to the terminal, not stdout

    image = sorted((FIXTURES / "test" / "coat").iterdir())[0]
    proc = subprocess.run(REMOTE + ["classify", job_id, str(image), "--top-k", "2"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith(f"{image}: ") and line.count("(") == 2
    proc = subprocess.run(REMOTE + ["classify", job_id, str(image), "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout)["results"][0]["predictions"][0]["label"] in ("coat", "sandal")


@pytest.mark.parametrize("args, key, code, message", [
    (["adapt", "/nonexistent/photos"], "k", 2, "does not exist"),
    (["adapt", str(FIXTURES / "train" / "bag")], "k", 2, "has no class folders"),
    (["adapt", str(FIXTURES / "train"), "--config", "{nope"], "k", 2, "--config is not valid JSON"),
    (["classify", "x", str(FIXTURES / "test" / "bag" / "000.png")], None, 2, "MMLOP_API_KEY"),
    (["classify", "00000000-0000-0000-0000-000000000000", str(FIXTURES / "test" / "bag" / "000.png")],
     "good", 2, "404 not-found"),
    (["classify", "x", "/nonexistent.png"], "good", 2, "/nonexistent.png"),
])
def test_remote_errors_are_one_line(embedded_stack, args, key, code, message):
    if key == "good":
        key = make_tenant(embedded_stack.database_url)[1]
    proc = subprocess.run(REMOTE + args, env=_env(embedded_stack.base_url, key), cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
