"""``mmlop remote``: the service from the command line, through ``mmlop_client``.

The server and key come from ``MMLOP_URL`` (default ``http://127.0.0.1:8000``, ``make run``'s
address) and ``MMLOP_API_KEY``. Errors print one ``error:`` line on stderr: exit 2 for bad input
(local files, options, a 4xx answer), 1 when the service fails or the job does. Registered by
``service/console.py``; ``python -m mmlop_client`` runs it alone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer

from .client import Client
from .errors import MMLoPAPIError, MMLoPClientError, MMLoPInputError

DEFAULT_URL = "http://127.0.0.1:8000"

remote_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Use a running service (MMLOP_URL, MMLOP_API_KEY).")


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _exit_code(exc: MMLoPClientError) -> int:
    if isinstance(exc, MMLoPInputError):
        return 2
    if isinstance(exc, MMLoPAPIError) and 400 <= exc.status < 500 and exc.status != 429:
        return 2
    return 1


def one_line_errors(fn: Any) -> Any:
    """Turn the client's errors into one ``error:`` line and exit 2 (bad input) or 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MMLoPClientError as exc:
            _fail(str(exc), _exit_code(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
    return wrapper


def _client() -> Client:
    key = os.environ.get("MMLOP_API_KEY", "").strip()
    if not key:
        _fail("MMLOP_API_KEY is not set (a tenant's key: `mmlop tenant create NAME` prints one)", 2)
    return Client(os.environ.get("MMLOP_URL", "").strip() or DEFAULT_URL, key)


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _dump(obj: Any) -> str:
    return json.dumps(dataclasses.asdict(obj), indent=2, default=_json_default)


def _config(value: Optional[str]) -> Optional[dict[str, Any]]:
    if not value:
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        _fail(f"--config is not valid JSON ({exc.msg} at position {exc.pos})", 2)
    if not isinstance(data, dict):
        _fail("--config must be a JSON object", 2)
    return data


def _names(value: Optional[str]) -> Optional[list[str]]:
    return [n.strip() for n in value.split(",")] if value else None


@remote_app.command("adapt")
@one_line_errors
def adapt(source: Path = typer.Argument(..., metavar="DIR", help="folder of class folders (DIR/<class>/<image>) or a .zip"),
          config: Optional[str] = typer.Option(None, help='JSON, e.g. \'{"epochs": 5, "shots": 16}\''),
          class_names: Optional[str] = typer.Option(None, help="comma-separated class order"),
          wait: bool = typer.Option(False, "--wait", help="wait for the end (progress bar on a terminal)"),
          timeout: Optional[float] = typer.Option(None, help="seconds --wait waits at most"),
          as_json: bool = typer.Option(False, "--json", help="print the adaptation as JSON")) -> None:
    """Upload labelled photos and start an adaptation; print its id (last line of stdout)."""
    with _client() as client:
        job = client.create_adaptation(source, config=_config(config), class_names=_names(class_names))
        typer.echo(f"{job.status}: {job.num_images} images, {len(job.class_names)} classes", err=True)
        if wait:
            job = client.wait(job.id, progress=True, timeout=timeout)
            metrics = job.metrics or {}
            shown = {k: metrics[k] for k in ("val_accuracy", "train_accuracy") if metrics.get(k) is not None}
            typer.echo(f"{job.status}" + (f": {json.dumps(shown)}" if shown else ""), err=True)
    typer.echo(_dump(job) if as_json else job.id)


@remote_app.command("classify")
@one_line_errors
def classify(adaptation_id: str = typer.Argument(..., metavar="ID"),
             images: list[Path] = typer.Argument(..., metavar="IMAGE..."),
             top_k: int = typer.Option(5, "--top-k"),
             class_names: Optional[str] = typer.Option(None, help="comma-separated open-vocabulary class names"),
             as_json: bool = typer.Option(False, "--json", help="print the answer as JSON")) -> None:
    """Print the top-k labels and probabilities of each IMAGE."""
    with _client() as client:
        result = client.classify(adaptation_id, list(images), top_k=top_k,
                                 class_names=_names(class_names))
    if as_json:
        typer.echo(_dump(result))
        return
    for path, res in zip(images, result.results):
        typer.echo(f"{path}: " + ", ".join(f"{p.label} ({p.score:.3f})" for p in res.predictions))


def main() -> None:
    """``python -m mmlop_client``: the remote commands alone."""
    remote_app(prog_name="mmlop-remote")
