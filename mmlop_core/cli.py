"""The `mmlop` command line: info, train, classify (typer).

Errors of the library print as one line on stderr with exit status 2; no tracebacks.
"""
from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="MMLoP few-shot adaptation of a frozen CLIP backbone.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line_errors(fn):
    """Turn library errors (and bad files) into a one-line message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .errors import MMLoPError
        try:
            return fn(*args, **kwargs)
        except MMLoPError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"{exc.filename or ''}: {exc.strerror or exc}".strip(": "))
    return wrapper


def json_option(value: Optional[str], what: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        _fail(f"--{what} is not valid JSON ({exc.msg} at position {exc.pos})")
    if not isinstance(data, dict):
        _fail(f"--{what} must be a JSON object")
    return data


@app.command()
@one_line_errors
def info(backbone: str = typer.Option("ViT-B-16", help="open_clip model name"),
         pretrained: str = typer.Option("openai", help="open_clip tag, local weights file, or 'none'"),
         preset: str = typer.Option("mmlop", help="adapter preset"),
         classes: int = typer.Option(10, help="class count used for checkpoint_bytes"),
         config: Optional[str] = typer.Option(None, help="adapter config overrides as JSON")) -> None:
    """Print the adapter's size as JSON (reads the model config only; no weights are loaded)."""
    from .info import adapter_info
    typer.echo(json.dumps(adapter_info(backbone, pretrained, preset, classes, json_option(config, "config")), indent=2))


@app.command()
@one_line_errors
def train(data_dir: Path = typer.Argument(..., help="folder with one sub-folder of images per class"),
          out: Path = typer.Option(..., "--out", help="adapter directory to write"),
          shots: int = typer.Option(16, help="images per class"),
          epochs: int = typer.Option(20), seed: int = typer.Option(1),
          preset: str = typer.Option("mmlop"), backbone: str = typer.Option("ViT-B-16"),
          pretrained: str = typer.Option("openai"), device: str = typer.Option("auto"),
          lr: Optional[float] = typer.Option(None, help="peak learning rate (default 0.0025)"),
          batch_size: Optional[int] = typer.Option(None, help="images per step (default 4)"),
          config: Optional[str] = typer.Option(None, help="adapter config overrides as JSON"),
          train_config: Optional[str] = typer.Option(None, help="extra train config fields as JSON")) -> None:
    """Train an adapter on DATA_DIR/<class name>/<images> and save it to --out."""
    from tqdm import tqdm

    from . import AdapterConfig, TrainConfig, load_backbone, load_class_folders, save_adapter, train_adapter
    adapter_cfg = AdapterConfig.from_dict({"preset": preset, **json_option(config, "config")})
    extra = {k: v for k, v in (("lr", lr), ("batch_size", batch_size)) if v is not None}
    train_cfg = TrainConfig.from_dict({"shots": shots, "epochs": epochs, "seed": seed, **extra,
                                       **json_option(train_config, "train-config")})
    images, labels, class_names = load_class_folders(data_dir)
    bb = load_backbone(backbone, pretrained, device=device)
    class _Bar:
        """tqdm bar created at the first step, when the step count is known."""

        bar = None

        def on_progress(self, p) -> None:
            if self.bar is None:
                self.bar = tqdm(total=p.steps, unit="step", file=sys.stderr, dynamic_ncols=True)
            self.bar.set_postfix(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.3f}", ips=f"{p.images_per_s:.0f}")
            self.bar.update(p.step - self.bar.n)

    progress = _Bar()
    try:
        adapter = train_adapter(bb, images, labels, class_names, adapter_cfg, train_cfg, callbacks=[progress])
    finally:
        if progress.bar is not None:
            progress.bar.close()
    size = save_adapter(adapter, out)
    typer.echo(json.dumps({"adapter": str(out), "classes": class_names, "checkpoint_bytes": size,
                           "trainable_parameters": adapter.trainable_parameters, **adapter.metrics}))


@app.command()
@one_line_errors
def classify(adapter_path: Path = typer.Argument(..., metavar="ADAPTER", help="adapter directory or exported .zip"),
             images: list[Path] = typer.Argument(..., metavar="IMAGE..."),
             top_k: int = typer.Option(5, "--top-k"),
             pretrained: Optional[str] = typer.Option(None, help="weights source; default: the adapter's"),
             class_names: Optional[str] = typer.Option(None, help="comma-separated open-vocabulary class names"),
             device: str = typer.Option("auto"),
             as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Print the top-k labels and probabilities of each IMAGE."""
    from . import Predictor, load_adapter, load_backbone, open_image
    adapter = load_adapter(adapter_path)
    bb = load_backbone(adapter.backbone_name, pretrained or adapter.backbone_pretrained, device=device)
    adapter = load_adapter(adapter_path, bb)
    pil = [open_image(p.read_bytes(), name=str(p)) for p in images]
    names = [n.strip() for n in class_names.split(",")] if class_names else None
    results = Predictor(bb).classify(adapter, pil, top_k=top_k, class_names=names)
    if as_json:
        typer.echo(json.dumps({str(p): [{"label": r.label, "score": r.score} for r in res]
                               for p, res in zip(images, results)}, indent=2))
        return
    for p, res in zip(images, results):
        typer.echo(f"{p}: " + ", ".join(f"{r.label} ({r.score:.3f})" for r in res))


def main() -> None:
    """Console entry point with warnings-level logging."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
