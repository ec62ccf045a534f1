"""Helpers for tests that start process trees: find every process of a session, free ports."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path


def default_sigint() -> None:
    """``preexec_fn`` for a process a test will send Ctrl-C: SIGINT and SIGQUIT back to default.

    `nohup make test &` (or any background job of a shell without job control) starts the test
    run with SIGINT and SIGQUIT ignored; exec keeps an ignored signal ignored, and bash cannot
    even trap one that was ignored at its start, so a Ctrl-C test would see nothing stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_processes(sid: int) -> dict[int, str]:
    """pid -> command line of every live (non-zombie) process whose session id is `sid`.

    Reparented orphans keep their session id, so this finds what a plain child walk would miss.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            state, session = fields[0], int(fields[3])
            if session != sid or state == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
        found[int(entry.name)] = cmdline
    return found


def wait_session_empty(sid: int, timeout: float) -> dict[int, str]:
    """Wait until no process of the session is alive; return what is left after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = session_processes(sid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def kill_session(sid: int) -> None:
    for pid in session_processes(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def wait_http_ok(url: str, timeout: float, alive=lambda: True) -> None:
    """Poll `url` until it answers 200; raise TimeoutError, or RuntimeError once `alive()` is False."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process exited before {url} answered (last error: {last})")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s (last error: {last})")
