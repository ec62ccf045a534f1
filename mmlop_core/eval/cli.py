"""``mmlop eval``: reproduce the paper's tables (base2novel, fewshot, xd, ablation).

Each command trains and tests one adapter per (dataset, preset, shots, seed) cell, stores the
cell under ``--out`` (an interrupted run resumes; stored cells are never recomputed), and
writes ``<task>.json`` + ``<task>.md`` there with the published numbers beside ours.
List options take space- or comma-separated values: ``--seeds 1 2 3`` = ``--seeds 1,2,3``.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from ..cli import EPOCHS_MAX, SEED_MAX, SHOTS_MAX, OneLineCommand, json_option, one_line_errors

_MULTI = ("--seeds", "--shots", "--datasets", "--presets", "--targets")


class _ListCommand(OneLineCommand):
    """Lets list options take several values after one flag: ``--seeds 1 2 3`` becomes
    ``--seeds 1 --seeds 2 --seeds 3`` before click parses it."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            tok = args[i]
            out.append(tok)
            i += 1
            if tok in _MULTI:
                first = True
                while i < len(args) and not args[i].startswith("-"):
                    if not first:
                        out.append(tok)
                    out.append(args[i])
                    first = False
                    i += 1
        return super().parse_args(ctx, out)


eval_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="Reproduce the paper's evaluation (CoOp datasets and splits).")


def _items(values: Optional[list[str]]) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def _ints(values: Optional[list[str]], what: str, lo: int, hi: int) -> list[int]:
    out = []
    for v in _items(values):
        try:
            out.append(int(v))
        except ValueError:
            raise typer.BadParameter(f"{v!r} is not an integer", param_hint=f"--{what}") from None
        if not lo <= out[-1] <= hi:
            raise typer.BadParameter(f"{v} is not in the range {lo}<=x<={hi}", param_hint=f"--{what}")
    if not out:
        raise typer.BadParameter("give at least one value", param_hint=f"--{what}")
    return list(dict.fromkeys(out))


def _settings(data_root: Path, out: Path, backbone: str, pretrained: str, device: str, epochs: Optional[int],
              precision: str, eval_batch_size: int, workers: int, quiet: bool, config: Optional[str],
              train_config: Optional[str]):
    from .runner import EvalSettings
    bars = not quiet and sys.stderr.isatty()
    if not quiet and not bars:  # a file or a pipe: one log line per finished cell, no carriage returns
        logging.getLogger("mmlop_core.eval").setLevel(logging.INFO)
    return EvalSettings(data_root=data_root, out=out, backbone=backbone, pretrained=pretrained, device=device,
                        epochs=epochs, precision=precision, eval_batch_size=eval_batch_size, workers=workers,
                        progress=bars, adapter_overrides=json_option(config, "config"),
                        train_overrides=json_option(train_config, "train-config"))


def _finish(harness, paths: tuple[Path, Path], lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)
    typer.echo(f"cells: {harness.computed} computed, {harness.reused} reused from {harness.settings.out / 'cells'}")
    typer.echo(f"wrote {paths[0]} and {paths[1]}")


def _meta(s, task: str, datasets: list[str], seeds: list[int], shots: Any, preset: str | None = None) -> dict:
    from .runner import DEFAULT_EPOCHS
    return {"task": task, "backbone": s.backbone, "pretrained": s.pretrained, "datasets": datasets, "seeds": seeds,
            "shots": shots, "epochs": s.epochs if s.epochs is not None else DEFAULT_EPOCHS[task], "preset": preset,
            "precision": s.precision, "adapter_overrides": s.adapter_overrides, "train_overrides": s.train_overrides}


# Options shared by every command (typer has no option groups; repeated on purpose).
DATA_ROOT = typer.Option(..., "--data-root", help="CoOp DATASET.ROOT: one folder per dataset (docs/REPRODUCE.md)")
OUT = typer.Option(Path("eval-out"), "--out", help="output directory: cells, adapters, <task>.json/.md")
BACKBONE = typer.Option("ViT-B-16", "--backbone", help="open_clip model name")
PRETRAINED = typer.Option("openai", "--pretrained", help="open_clip tag, local weights file, or 'none'")
DEVICE = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto")
EPOCHS = typer.Option(None, "--epochs", min=0, max=EPOCHS_MAX, help="training epochs (default: 20 base2novel/xd, 50 fewshot)")
PRECISION = typer.Option("auto", "--precision", help="auto (bf16 on CUDA), bf16, fp16 or fp32")
EVAL_BS = typer.Option(64, "--eval-batch-size", min=1, max=65536, help="test images per forward")
WORKERS = typer.Option(0, "--workers", min=0, max=1024, help="processes decoding test images")
QUIET = typer.Option(False, "--quiet", help="no progress (bars on a terminal, one line per cell elsewhere)")
CONFIG = typer.Option(None, "--config", help="adapter config overrides as JSON (applied to every preset)")
TRAIN_CONFIG = typer.Option(None, "--train-config", help="extra train config fields as JSON, e.g. {\"lr\": 0.002}")
SEEDS = typer.Option(["1", "2", "3"], "--seeds", help="seeds (space- or comma-separated)")
DATASETS = typer.Option(None, "--datasets", help="datasets (default: the 11 of the paper), e.g. eurosat,dtd")


def _datasets(values: Optional[list[str]]) -> list[str]:
    from .datasets import BASE_TO_NOVEL_DATASETS, resolve_dataset_name
    names = _items(values) or list(BASE_TO_NOVEL_DATASETS)
    return list(dict.fromkeys(resolve_dataset_name(n) for n in names))


@eval_app.command("base2novel", cls=_ListCommand)
@one_line_errors
def base2novel(data_root: Path = DATA_ROOT, datasets: Optional[list[str]] = DATASETS, seeds: list[str] = SEEDS,
               preset: str = typer.Option("mmlop", "--preset", help="adapter preset (mmlop, ivlp, coop, zeroshot, ...)"),
               shots: int = typer.Option(16, "--shots", min=1, max=SHOTS_MAX, help="training images per base class"),
               out: Path = OUT, backbone: str = BACKBONE, pretrained: str = PRETRAINED, device: str = DEVICE,
               epochs: Optional[int] = EPOCHS, precision: str = PRECISION, eval_batch_size: int = EVAL_BS,
               workers: int = WORKERS, quiet: bool = QUIET, config: Optional[str] = CONFIG,
               train_config: Optional[str] = TRAIN_CONFIG) -> None:
    """Base-to-novel: train on the base half of each dataset's classes, test base and novel."""
    from .report import base2novel_markdown, write_report
    from .runner import Harness
    s = _settings(data_root, out, backbone, pretrained, device, epochs, precision, eval_batch_size, workers, quiet,
                  config, train_config)
    names, seed_list = _datasets(datasets), _ints(seeds, "seeds", 0, SEED_MAX)
    harness = Harness(s)
    results = harness.base2novel(names, seed_list, [preset], shots)
    meta = _meta(s, "base2novel", names, seed_list, shots, preset)
    paths = write_report(s.out, f"base2novel-{preset}", {"meta": meta, "results": results},
                         base2novel_markdown(results, meta))
    avg = results[preset]["average"]
    _finish(harness, paths, [f"{preset}: base {avg['base']:.2f} novel {avg['novel']:.2f} HM {avg['hm']:.2f} "
                             f"(average over {avg['datasets']} datasets)"])


@eval_app.command("fewshot", cls=_ListCommand)
@one_line_errors
def fewshot(data_root: Path = DATA_ROOT, datasets: Optional[list[str]] = DATASETS, seeds: list[str] = SEEDS,
            shots: list[str] = typer.Option(["4", "8", "16"], "--shots", help="shots per class (space- or comma-separated)"),
            preset: str = typer.Option("mmlop", "--preset", help="adapter preset"),
            out: Path = OUT, backbone: str = BACKBONE, pretrained: str = PRETRAINED, device: str = DEVICE,
            epochs: Optional[int] = EPOCHS, precision: str = PRECISION, eval_batch_size: int = EVAL_BS,
            workers: int = WORKERS, quiet: bool = QUIET, config: Optional[str] = CONFIG,
            train_config: Optional[str] = TRAIN_CONFIG) -> None:
    """All-class few-shot: train on k shots of every class, test on the full test split."""
    from .report import fewshot_markdown, write_report
    from .runner import Harness
    s = _settings(data_root, out, backbone, pretrained, device, epochs, precision, eval_batch_size, workers, quiet,
                  config, train_config)
    names, seed_list, shot_list = _datasets(datasets), _ints(seeds, "seeds", 0, SEED_MAX), _ints(shots, "shots", 1, SHOTS_MAX)
    if any(k < 1 for k in shot_list):
        raise typer.BadParameter("shots must be >= 1", param_hint="--shots")
    harness = Harness(s)
    results = harness.fewshot(names, seed_list, shot_list, preset)
    meta = _meta(s, "fewshot", names, seed_list, shot_list, preset)
    paths = write_report(s.out, f"fewshot-{preset}", {"meta": meta, "results": {str(k): v for k, v in results.items()}},
                         fewshot_markdown(results, meta))
    _finish(harness, paths, [f"{preset} {k} shots: {r['average']['accuracy']:.2f} (average over "
                             f"{r['average']['datasets']} datasets)" for k, r in results.items()])


@eval_app.command("xd", cls=_ListCommand)
@one_line_errors
def xd(data_root: Path = DATA_ROOT, seeds: list[str] = SEEDS,
       targets: Optional[list[str]] = typer.Option(None, "--targets", help="test datasets (default: imagenetv2, "
                                                   "imagenet_sketch, imagenet_a, imagenet_r)"),
       source: str = typer.Option("imagenet", "--source", help="training dataset (all classes)"),
       preset: str = typer.Option("mmlop", "--preset", help="adapter preset"),
       shots: int = typer.Option(16, "--shots", min=1, max=SHOTS_MAX, help="training images per class"),
       out: Path = OUT, backbone: str = BACKBONE, pretrained: str = PRETRAINED, device: str = DEVICE,
       epochs: Optional[int] = EPOCHS, precision: str = PRECISION, eval_batch_size: int = EVAL_BS,
       workers: int = WORKERS, quiet: bool = QUIET, config: Optional[str] = CONFIG,
       train_config: Optional[str] = TRAIN_CONFIG) -> None:
    """Domain generalisation: train on ImageNet (or fmnist), test on ImageNet-V2/-Sketch/-A/-R (or the
    fmnist targets: the default when --source is fmnist)."""
    from .datasets import IMAGENET_VARIANTS, resolve_dataset_name
    from .report import xd_markdown, write_report
    from .runner import Harness
    s = _settings(data_root, out, backbone, pretrained, device, epochs, precision, eval_batch_size, workers, quiet,
                  config, train_config)
    from .datasets import FMNIST_TARGETS
    default_targets = FMNIST_TARGETS if resolve_dataset_name(source) == "fmnist" else IMAGENET_VARIANTS
    target_list = list(dict.fromkeys(resolve_dataset_name(t) for t in (_items(targets) or default_targets)))
    seed_list = _ints(seeds, "seeds", 0, SEED_MAX)
    harness = Harness(s)
    result = harness.xd(seed_list, preset, shots, resolve_dataset_name(source), target_list)
    meta = _meta(s, "xd", [resolve_dataset_name(source), *target_list], seed_list, shots, preset)
    paths = write_report(s.out, f"xd-{preset}", {"meta": meta, "results": result}, xd_markdown(result, meta))
    src = next(iter(result["source"]["datasets"].values()))
    _finish(harness, paths, [f"{preset}: source {src['accuracy']:.2f}, target mean "
                             f"{result['targets']['average']['accuracy']:.2f}"])


@eval_app.command("ablation", cls=_ListCommand)
@one_line_errors
def ablation(data_root: Path = DATA_ROOT, datasets: Optional[list[str]] = DATASETS, seeds: list[str] = SEEDS,
             presets: Optional[list[str]] = typer.Option(None, "--presets", help="presets compared (default: mmlop, "
                                                         "mmlop-fullrank, mmlop-nolscl, mmlop-noudc, mmlop-noshare, ivlp)"),
             shots: int = typer.Option(16, "--shots", min=1, max=SHOTS_MAX, help="training images per base class"),
             out: Path = OUT, backbone: str = BACKBONE, pretrained: str = PRETRAINED, device: str = DEVICE,
             epochs: Optional[int] = EPOCHS, precision: str = PRECISION, eval_batch_size: int = EVAL_BS,
             workers: int = WORKERS, quiet: bool = QUIET, config: Optional[str] = CONFIG,
             train_config: Optional[str] = TRAIN_CONFIG) -> None:
    """Ablation: base-to-novel of mmlop and of each preset with one component off."""
    from ..config import AdapterConfig
    from .report import ablation_markdown, write_report
    from .runner import ABLATION_PRESETS, Harness
    s = _settings(data_root, out, backbone, pretrained, device, epochs, precision, eval_batch_size, workers, quiet,
                  config, train_config)
    preset_list = list(dict.fromkeys(_items(presets) or ABLATION_PRESETS))
    for p in preset_list:
        AdapterConfig.from_preset(p)  # unknown preset -> ConfigError before any work
    names, seed_list = _datasets(datasets), _ints(seeds, "seeds", 0, SEED_MAX)
    harness = Harness(s)
    results = harness.base2novel(names, seed_list, preset_list, shots)
    meta = _meta(s, "base2novel", names, seed_list, shots, None)
    meta["task"] = "ablation"
    paths = write_report(s.out, "ablation", {"meta": meta, "results": results}, ablation_markdown(results, meta))
    _finish(harness, paths, [f"{p}: base {r['average']['base']:.2f} novel {r['average']['novel']:.2f} "
                             f"HM {r['average']['hm']:.2f}" for p, r in results.items()])


@eval_app.command("prepare-fmnist", cls=OneLineCommand)
@one_line_errors
def prepare_fmnist(out: Path = typer.Argument(..., help="data root to write (then --data-root OUT)"),
                   source: Path = typer.Option(Path("/usr/share/datasets/fashion-mnist"), "--source",
                                               help="Fashion-MNIST IDX folder (Debian dataset-fashion-mnist)"),
                   train_per_class: Optional[int] = typer.Option(None, "--train-per-class", min=1, max=10**9,
                                                                 help="keep the first N train photos per class"),
                   test_per_class: Optional[int] = typer.Option(None, "--test-per-class", min=1, max=10**9,
                                                                help="keep the first N test photos per class"),
                   quiet: bool = QUIET) -> None:
    """Write the Fashion-MNIST mini benchmark (fmnist + shifted test domains) in CoOp's layout."""
    from ..cli import _Progress
    from .fmnist_prepare import prepare_fmnist as run
    bar = _Progress(unit="image")
    try:
        summary = run(out, source, train_per_class, test_per_class,
                      on_progress=None if quiet else lambda done, total: bar.update(done, total))
    finally:
        bar.close()
    for key, info in summary.items():
        typer.echo(f"{key}: {info['train']} train / {info['test']} test photos in {info['folder']}")


__all__ = ["eval_app"]
