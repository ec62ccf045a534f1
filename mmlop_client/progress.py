"""What ``wait`` shows while it polls: a tqdm bar on a terminal, driven by the job's own
progress (step of steps, epoch, loss) and the server's ETA; nothing elsewhere."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from typing import Any, Union

from .models import Adaptation

ProgressArg = Union[bool, Callable[[Adaptation], None]]


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _size(stream: Any) -> tuple[int, int]:
    """``(ncols, nrows)`` for tqdm: the terminal's columns and rows less one (tqdm's own rule),
    each from ``shutil.get_terminal_size``'s fallback (``COLUMNS``/``LINES``, else 80 x 24)
    where the terminal reports 0 or cannot be asked (``script -qc`` with no size set): tqdm
    takes 0 - 1 as "draw nothing"."""
    try:
        cols, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        cols, rows = 0, 0
    fallback = shutil.get_terminal_size()  # 80 x 24 where even stdout says 0
    return (cols if cols > 0 else fallback.columns) - 1, (rows if rows > 0 else fallback.lines) - 1


class ProgressBar:
    """A tqdm bar over the job's training steps; its text shows status, epoch, loss and the
    server's ``eta_s`` (not tqdm's own rate estimate). Its width follows the terminal's, read
    at each update by ``_size`` (not tqdm's ``dynamic_ncols``, which draws nothing on a terminal
    that reports 0 columns)."""

    def __init__(self, job_id: str) -> None:
        from tqdm import tqdm

        ncols, nrows = _size(sys.stderr)
        self._bar = tqdm(total=None, desc=job_id[:8], unit="step", ncols=ncols, nrows=nrows,
                         file=sys.stderr, leave=True,
                         bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                    "[{elapsed}{postfix}]")

    def update(self, job: Adaptation) -> None:
        """Show ``job``'s status and progress."""
        p = job.progress
        if p is not None and p.steps:
            if self._bar.total != p.steps:
                self._bar.total = p.steps
            self._bar.n = p.steps if job.status == "succeeded" else (p.step or 0)
        elif job.status == "succeeded" and self._bar.total:
            self._bar.n = self._bar.total
        parts = [job.status]
        if p is not None and p.epochs:
            parts.append(f"epoch {p.epoch}/{p.epochs}")
        if p is not None and p.loss is not None:
            parts.append(f"loss {p.loss:.3f}")
        if job.status == "running":
            parts.append(f"eta {_eta(p.eta_s if p else None)}")
        self._bar.set_postfix_str(", ".join(parts), refresh=False)
        self._bar.ncols, self._bar.nrows = _size(self._bar.fp)
        self._bar.refresh()

    def close(self) -> None:
        """Leave the bar as it is on the terminal."""
        self._bar.close()


def make_observer(progress: ProgressArg, job_id: str) -> tuple[Callable[[Adaptation], None], Callable[[], None]]:
    """``(update, close)`` for ``wait``'s ``progress`` argument: a callable is called with every
    polled ``Adaptation``; True draws a bar when stderr is a terminal; otherwise nothing."""
    if callable(progress):
        return progress, lambda: None
    if progress and sys.stderr.isatty():
        bar = ProgressBar(job_id)
        return bar.update, bar.close
    noop: Callable[[Any], None] = lambda _job: None  # noqa: E731
    return noop, lambda: None
