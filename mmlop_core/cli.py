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
from typer.core import TyperCommand

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


class OneLineCommand(TyperCommand):
    """A bad option value (out of its range, not a number, missing) is one ``error:`` line and
    exit status 2, like the library's errors (typer would print usage and a framed box)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as exc:  # typer's own click (typer._click), not the click package
            _fail(exc.format_message())

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:  # raised by the command itself (list options checked there)
            _fail(exc.format_message())


# Bounds of the integer options, checked where they are parsed (the config classes check them again).
TOP_K_MAX = 1000  # as the API's classify (top_k 1..1000)
SEED_MAX = 2**31 - 1  # TrainConfig.seed
SHOTS_MAX = 100_000  # TrainConfig.shots
EPOCHS_MAX = 1000  # TrainConfig.epochs
BATCH_MAX = 4096  # TrainConfig.batch_size
CLASSES_MAX = 100_000  # info --classes (the checkpoint it sizes is built in memory)


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


class _Progress:
    """A tqdm bar on a terminal; elsewhere one log line per tenth of the run (no carriage returns)."""

    def __init__(self, unit: str) -> None:
        self.unit, self.bar, self.last_tenth = unit, None, -1
        self.tty = sys.stderr.isatty()

    def update(self, done: int, total: int, **postfix: str) -> None:
        if not self.tty:
            tenth = done * 10 // max(total, 1)
            if tenth != self.last_tenth:
                self.last_tenth = tenth
                extra = " ".join(f"{k}={v}" for k, v in postfix.items())
                typer.echo(f"{done}/{total} {self.unit}s {extra}", err=True)
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.set_postfix(**postfix)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _TrainLog:
    """Training callback for `mmlop train`: a tqdm bar of steps when stderr is a terminal,
    elsewhere (a file, a pipe) one log line per epoch and no carriage returns (issue 12 D.17).

    An epoch's line is written when the next epoch's first step reports, and the last one by
    :meth:`close`: ``epoch E/EPOCHS step S/STEPS loss L images/s R eta Ts``, where L is the mean
    step loss of the epoch; an epoch cut short (budget, cancel, error) ends with ``(stopped)``.
    """

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar, self.last, self.losses = None, None, []

    def on_progress(self, p) -> None:
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm
                self.bar = tqdm(total=p.steps, unit="step", file=sys.stderr, dynamic_ncols=True)
            self.bar.set_postfix(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.3f}", ips=f"{p.images_per_s:.0f}")
            self.bar.update(p.step - self.bar.n)
            return
        if self.last is not None and p.epoch != self.last.epoch:
            self._line(complete=True)
        self.last = p
        self.losses.append(p.loss)

    def _line(self, complete: bool) -> None:
        p, mean = self.last, sum(self.losses) / len(self.losses)
        typer.echo(f"epoch {p.epoch}/{p.epochs} step {p.step}/{p.steps} loss {mean:.4f} "
                   f"images/s {p.images_per_s:.1f} eta {p.eta_s:.0f}s" + ("" if complete else " (stopped)"), err=True)
        self.losses = []

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.losses:
            self._line(complete=self.last.step >= self.last.steps)


@app.command(cls=OneLineCommand)
@one_line_errors
def info(backbone: str = typer.Option("ViT-B-16", help="open_clip model name"),
         pretrained: str = typer.Option("openai", help="open_clip tag, local weights file, or 'none'"),
         preset: str = typer.Option("mmlop", help="adapter preset"),
         classes: int = typer.Option(10, min=1, max=CLASSES_MAX, help="class count used for checkpoint_bytes"),
         config: Optional[str] = typer.Option(None, help="adapter config overrides as JSON")) -> None:
    """Print the adapter's size as JSON (reads the model config only; no weights are loaded)."""
    from .info import adapter_info
    typer.echo(json.dumps(adapter_info(backbone, pretrained, preset, classes, json_option(config, "config")), indent=2))


@app.command(cls=OneLineCommand)
@one_line_errors
def train(data_dir: Path = typer.Argument(..., help="folder with one sub-folder of images per class"),
          out: Path = typer.Option(..., "--out", help="adapter directory to write"),
          shots: int = typer.Option(16, min=1, max=SHOTS_MAX, help="images per class"),
          epochs: int = typer.Option(20, min=0, max=EPOCHS_MAX), seed: int = typer.Option(1, min=0, max=SEED_MAX),
          preset: str = typer.Option("mmlop"), backbone: str = typer.Option("ViT-B-16"),
          pretrained: str = typer.Option("openai"), device: str = typer.Option("auto"),
          lr: Optional[float] = typer.Option(None, help="peak learning rate (default 0.0025)"),
          batch_size: Optional[int] = typer.Option(None, min=1, max=BATCH_MAX, help="images per step (default 4)"),
          config: Optional[str] = typer.Option(None, help="adapter config overrides as JSON"),
          train_config: Optional[str] = typer.Option(None, help="extra train config fields as JSON")) -> None:
    """Train an adapter on DATA_DIR/<class name>/<images> and save it to --out."""
    from . import AdapterConfig, TrainConfig, load_backbone, load_class_folders, save_adapter, train_adapter
    adapter_cfg = AdapterConfig.from_dict({"preset": preset, **json_option(config, "config")})
    extra = {k: v for k, v in (("lr", lr), ("batch_size", batch_size)) if v is not None}
    train_cfg = TrainConfig.from_dict({"shots": shots, "epochs": epochs, "seed": seed, **extra,
                                       **json_option(train_config, "train-config")})
    images, labels, class_names = load_class_folders(data_dir)
    bb = load_backbone(backbone, pretrained, device=device)
    progress = _TrainLog()
    try:
        adapter = train_adapter(bb, images, labels, class_names, adapter_cfg, train_cfg, callbacks=[progress])
    finally:
        progress.close()
    size = save_adapter(adapter, out)
    typer.echo(json.dumps({"adapter": str(out), "classes": class_names, "checkpoint_bytes": size,
                           "trainable_parameters": adapter.trainable_parameters, **adapter.metrics}))


@app.command(cls=OneLineCommand)
@one_line_errors
def classify(adapter_path: Path = typer.Argument(..., metavar="ADAPTER", help="adapter directory or exported .zip"),
             images: list[Path] = typer.Argument(..., metavar="IMAGE..."),
             top_k: int = typer.Option(5, "--top-k", min=1, max=TOP_K_MAX, help=f"labels per image (1 to {TOP_K_MAX})"),
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


@app.command("pretrain-tiny", cls=OneLineCommand)
@one_line_errors
def pretrain_tiny(out: Path = typer.Option(..., "--out", help="fp16 .safetensors file to write"),
                  epochs: float = typer.Option(1.5, help="passes over the train photos"),
                  batch_size: int = typer.Option(256, min=2, max=65536, help="photo-caption pairs per step"),
                  seed: int = typer.Option(0, min=0, max=SEED_MAX),
                  threads: int = typer.Option(0, min=0, max=1024, help="torch CPU threads (0 = default)"),
                  max_steps: Optional[int] = typer.Option(None, min=1, max=10**9, help="stop after this many steps (smoke test)"),
                  holdout: int = typer.Option(2000, min=0, max=59_000, help="train photos kept out for the zero-shot check"),
                  max_photos: Optional[int] = typer.Option(None, min=1, max=10**9, help="train on the first N photos (smoke test)"),
                  eval_every: int = typer.Option(0, min=0, max=10**7, help="log the holdout zero-shot accuracy every N steps"),
                  label_rate: float = typer.Option(0.3, help="share of captions using a label word"),
                  loose_rate: float = typer.Option(0.5, help="of those, the share using a neighbouring class's word"),
                  generic_rate: float = typer.Option(0.1, help="share of captions naming the group, not the class"),
                  logit_scale_lr_mult: float = typer.Option(100.0, help="the logit scale's learning rate over the others'"),
                  data_dir: Path = typer.Option(Path("/usr/share/datasets/fashion-mnist"),
                                                help="Fashion-MNIST IDX folder (Debian dataset-fashion-mnist)")) -> None:
    """Pretrain the tiny CLIP (mmlop-tiny) on Fashion-MNIST's train split; print its metrics as JSON."""
    from .pretrain import PretrainConfig
    from .pretrain import pretrain_tiny as run
    config = PretrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, threads=threads,
                            max_steps=max_steps, holdout=holdout, max_photos=max_photos,
                            eval_every=eval_every, label_rate=label_rate, generic_rate=generic_rate,
                            loose_rate=loose_rate, logit_scale_lr_mult=logit_scale_lr_mult)
    bar = _Progress(unit="step")
    try:
        metrics = run(out, config, data_dir, on_progress=lambda p: bar.update(p.step, p.steps, loss=f"{p.loss:.3f}",
                                                                              pps=f"{p.pairs_per_s:.0f}"))
    finally:
        bar.close()
    typer.echo(json.dumps(metrics))


def main() -> None:
    """Console entry point with warnings-level logging."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
