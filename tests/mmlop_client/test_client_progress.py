"""wait()'s tqdm bar on a real pseudo-terminal: drawn at the terminal's width, and at a fallback
width when the terminal reports 0 columns and 0 rows (``script -qc`` without ``stty cols``),
where tqdm's own size reading (columns - 1, rows - 1: -1 and -1) draws nothing."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import sys
import termios
from datetime import datetime, timezone

import pytest

from mmlop_client.models import Adaptation, Progress
from mmlop_client.progress import make_observer


def _job(status: str, step: int) -> Adaptation:
    return Adaptation(id="0123456789abcdef", status=status, class_names=["a", "b"], num_images=4,
                      backbone="tiny", pretrained="none", adapter_config={}, train_config={},
                      attempt=1, created_at=datetime.now(timezone.utc),
                      progress=Progress(epoch=1, epochs=2, step=step, steps=10, loss=0.5, eta_s=7))


def _drawn_on_pty(monkeypatch, columns: int, rows: int) -> str:
    """What wait()'s bar writes to a pseudo-terminal whose size says ``columns`` x ``rows``."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    monkeypatch.setenv("COLUMNS", "80")  # the fallback's width: the terminal's own wins if > 0
    monkeypatch.setenv("LINES", "24")
    with os.fdopen(slave, "w", buffering=1) as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        update, close = make_observer(True, "0123456789abcdef")
        update(_job("running", 4))
        update(_job("succeeded", 10))
        close()
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the slave side is closed and drained
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return out.decode(errors="replace")


@pytest.mark.parametrize(("columns", "rows"), [(100, 30), (0, 0), (0, 24)])
def test_bar_is_drawn_even_when_the_terminal_reports_no_size(monkeypatch, columns, rows):
    drawn = _drawn_on_pty(monkeypatch, columns, rows)
    assert "01234567" in drawn and "10/10" in drawn and "succeeded" in drawn, repr(drawn)
    assert "running, epoch 1/2, loss 0.500, eta 0:07" in drawn, repr(drawn)
    last = drawn.replace("\r\n", "\r").split("\r")
    assert max(len(line) for line in last) <= (columns or 80), repr(drawn)
