"""The four evaluations of the paper on one code path: base-to-novel, all-class few-shot,
domain generalisation (ImageNet -> V2/Sketch/A/R) and the ablation (docs/METHOD.md section 7).

Each (task, preset, dataset, shots, seed) cell trains one adapter with
:func:`mmlop_core.train_adapter` and scores it with :class:`mmlop_core.Predictor` on the test
split, preprocessed once per dataset (:class:`~mmlop_core.eval.testset.CachedTestSplit`). Finished
cells are stored in the output directory and never recomputed (:class:`CellStore`); adapters
are saved beside them (``OUT/adapters/...``, ~46 KB each).

Defaults follow PromptSRC's configs (``vit_b16_c2_ep20_batch4_4+4ctx.yaml``: 20 epochs
base-to-novel; ``..._cross_datasets.yaml``: 20 epochs on ImageNet; ``..._few_shot.yaml``: 50).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..adapter import Adapter
from ..backbone import Backbone, load_backbone
from ..checkpoint import load_adapter, save_adapter
from ..config import AdapterConfig, TrainConfig
from ..errors import CheckpointError, ConfigError
from ..predictor import Predictor
from ..trainer import train_adapter
from .datasets import IMAGENET_VARIANTS, SPECS, Dataset, Sample, check_files, load_dataset, open_sample, resolve_dataset_name
from .protocol import base_novel_labels, few_shot, harmonic_mean, subsample_classes, summarize_accuracy, summarize_base2novel
from .store import CellStore
from .testset import CachedTestSplit, accuracy

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1  # bump when a change makes stored cells incomparable
DEFAULT_EPOCHS = {"base2novel": 20, "fewshot": 50, "xd": 20}
ABLATION_PRESETS: tuple[str, ...] = ("mmlop", "mmlop-fullrank", "mmlop-nolscl", "mmlop-noudc", "mmlop-noshare", "ivlp")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class EvalSettings:
    """Settings shared by every evaluation task.

    Attributes:
        data_root: CoOp's ``DATASET.ROOT`` (one folder per dataset below it).
        out: output directory (cells, adapters, reports).
        backbone / pretrained / device: see :func:`mmlop_core.load_backbone`.
        epochs: training epochs; None = the task's default (:data:`DEFAULT_EPOCHS`).
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``bf16``, ``fp16``, ``fp32``; used for
            training (``TrainConfig.precision``) and evaluation.
        eval_batch_size: test images per forward.
        workers: DataLoader processes decoding test images (0 = in the main process).
        progress: tqdm bars on stderr.
        adapter_overrides / train_overrides: extra AdapterConfig / TrainConfig fields.
    """

    data_root: Path
    out: Path
    backbone: str = "ViT-B-16"
    pretrained: str = "openai"
    device: str = "auto"
    epochs: int | None = None
    precision: str = "auto"
    eval_batch_size: int = 64
    workers: int = 0
    progress: bool = True
    adapter_overrides: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_root, self.out = Path(self.data_root), Path(self.out)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is not valid; use one of {', '.join(PRECISIONS)}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size={self.eval_batch_size!r} must be >= 1")
        if self.workers < 0:
            raise ConfigError(f"workers={self.workers!r} must be >= 0")
        for key in ("shots", "seed", "epochs"):
            if key in self.train_overrides:
                raise ConfigError(f"train config field {key!r} is set by the harness; use --{key}")
        if "template" in self.adapter_overrides:
            raise ConfigError("adapter config field 'template' is set per dataset by the harness")


class _StepBar:
    """Training callback: one tqdm bar of optimizer steps."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def on_progress(self, p) -> None:
        self.bar.total = p.steps
        self.bar.set_postfix(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.3f}", refresh=False)
        self.bar.update(p.step - self.bar.n)


class Harness:
    """Runs evaluation tasks; loads the backbone lazily (not at all when every cell is stored).

    Attributes:
        computed / reused: cells trained and evaluated in this run / found in the store.
    """

    def __init__(self, settings: EvalSettings) -> None:
        self.settings = settings
        self.store = CellStore(settings.out)
        self.computed = 0
        self.reused = 0
        self._backbone: Backbone | None = None
        self._predictor: Predictor | None = None

    # ---- shared pieces ---------------------------------------------------------------------

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            s = self.settings
            self._backbone = load_backbone(s.backbone, s.pretrained, device=s.device)
            self._predictor = Predictor(self._backbone)
        return self._backbone

    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            self._predictor = Predictor(self.backbone)
        return self._predictor

    def configs(self, task: str, preset: str, dataset: str, seed: int) -> tuple[AdapterConfig, TrainConfig]:
        """Adapter and train configs of one cell (dataset template, task's epochs, the seed).

        Raises:
            ConfigError: unknown preset or invalid override.
        """
        s = self.settings
        adapter = AdapterConfig.from_preset(preset, **{**s.adapter_overrides, "template": SPECS[dataset].template})
        epochs = s.epochs if s.epochs is not None else DEFAULT_EPOCHS[task]
        # Few-shot images are sampled by the harness (protocol.few_shot), so the trainer keeps all.
        train = TrainConfig.from_dict({**s.train_overrides, "shots": None, "epochs": epochs, "seed": seed,
                                       "precision": s.precision})
        return adapter, train

    def cell_settings(self, adapter: AdapterConfig, train: TrainConfig, shots: int | None) -> dict[str, Any]:
        """What a stored cell must have been computed with to be reused (JSON-compatible)."""
        s = self.settings
        return {"protocol": PROTOCOL_VERSION, "backbone": s.backbone, "pretrained": s.pretrained, "shots": shots,
                "adapter": adapter.to_dict(), "train": train.to_dict(), "eval_precision": s.precision}

    def _bar(self, **kwargs) -> tqdm:
        return tqdm(file=sys.stderr, disable=not self.settings.progress, dynamic_ncols=True, **kwargs)

    def train(self, samples: Sequence[Sample], class_names: list[str], adapter_cfg: AdapterConfig,
              train_cfg: TrainConfig, desc: str) -> Adapter:
        """Open `samples` and train one adapter on them (labels index `class_names`)."""
        check_files(samples)
        images = [open_sample(x) for x in samples]
        labels = [x.label for x in samples]
        with self._bar(desc=desc, unit="step", leave=False) as bar:
            return train_adapter(self.backbone, images, labels, class_names, adapter_cfg, train_cfg,
                                 callbacks=[_StepBar(bar)])

    def _adapter_dir(self, task: str, preset: str, dataset: str, shots: int | None, seed: int) -> Path:
        return self.settings.out / "adapters" / task / preset / dataset / f"shots{shots}-seed{seed}"

    def _save_adapter(self, adapter: Adapter, directory: Path) -> None:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
        try:
            save_adapter(adapter, tmp)
            if directory.exists():
                shutil.rmtree(directory)
            tmp.rename(directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _relative(self, samples: Sequence[Sample]) -> list[str]:
        """Paths of the sampled training images relative to the data root (recorded per cell)."""
        root = os.path.abspath(self.settings.data_root)
        return [os.path.relpath(x.path, root) for x in samples]

    def _test_images(self, dataset: Dataset) -> CachedTestSplit:
        return CachedTestSplit(self.backbone, dataset.test, workers=self.settings.workers,
                               progress=self.settings.progress, desc=f"{dataset.key} test images")

    def _accuracy(self, adapter: Adapter, test: CachedTestSplit, rows=None, labels=None, names=None) -> float:
        return accuracy(self.predictor, adapter, test, rows, labels, names,
                        batch_size=self.settings.eval_batch_size, precision=self.settings.precision)

    # ---- base-to-novel -------------------------------------------------------------------

    def _reuse_cells(self, task: str, key: str, cells: list[tuple], records: dict, bar) -> list[tuple]:
        """Split one dataset's cells into stored records and work still to do.

        Args:
            cells: ``(label, preset, shots, seed)`` per cell; ``label`` is the axis the task varies
                (the preset for base2novel, the shots for fewshot).
            records: filled in place with ``(key, label, seed) -> record`` for every reusable cell.

        Returns:
            ``(label, seed, adapter_config, train_config, settings, path)`` per cell to compute.
        """
        pending = []
        for label, preset, shots, seed in cells:
            a_cfg, t_cfg = self.configs(task, preset, key, seed)
            settings = self.cell_settings(a_cfg, t_cfg, shots)
            path = self.store.path(task, preset, key, shots, seed)
            rec = self.store.load(path, settings)
            if rec is not None:
                records[(key, label, seed)] = rec
                self.reused += 1
                bar.update(1)
            else:
                pending.append((label, seed, a_cfg, t_cfg, settings, path))
        return pending

    def base2novel(self, datasets: Sequence[str], seeds: Sequence[int], presets: Sequence[str],
                   shots: int = 16) -> dict[str, dict]:
        """Base-to-novel cells for every (dataset, preset, seed); returns per-preset summaries.

        Per cell: ``shots`` images per class drawn with the seed from the full train split,
        restricted to the base half; test on the base and novel halves of the test split, each
        against its own class names (docs/METHOD.md section 7, CoCoOp protocol).

        Returns:
            preset -> :func:`~mmlop_core.eval.protocol.summarize_base2novel` output plus
            ``"cells"`` (the stored records) and ``"trainable_parameters"``.
        """
        keys = [resolve_dataset_name(d) for d in datasets]
        plan = [(d, p, s) for d in keys for p in presets for s in seeds]
        records: dict[tuple[str, str, int], dict] = {}
        with self._bar(total=len(plan), desc="base2novel cells", unit="cell") as cells_bar:
            for key in keys:
                pending = self._reuse_cells("base2novel", key, [(p, p, shots, s) for p in presets for s in seeds],
                                            records, cells_bar)
                if not pending:
                    continue
                ds = load_dataset(key, self.settings.data_root)
                base, novel = base_novel_labels(ds.num_classes)
                m = len(base)
                test = self._test_images(ds)
                base_rows = (test.labels < m).nonzero().flatten()
                novel_rows = (test.labels >= m).nonzero().flatten()
                base_names = [ds.classnames[i] for i in base]
                novel_names = [ds.classnames[i] for i in novel]
                for preset, seed, a_cfg, t_cfg, settings, path in pending:
                    start = time.perf_counter()
                    train_samples = subsample_classes(few_shot(ds.train, shots, seed), base)
                    adapter = self.train(train_samples, base_names, a_cfg, t_cfg,
                                         desc=f"{key} {preset} seed {seed}")
                    trained = time.perf_counter()
                    b = self._accuracy(adapter, test, base_rows, test.labels[base_rows])
                    n = self._accuracy(adapter, test, novel_rows, test.labels[novel_rows] - m, novel_names)
                    rec = {"task": "base2novel", "dataset": key, "preset": preset, "seed": seed, "shots": shots,
                           "base": b, "novel": n, "hm": harmonic_mean(b, n),
                           "base_classes": len(base), "novel_classes": len(novel),
                           "test_base_images": len(base_rows), "test_novel_images": len(novel_rows),
                           "train_images": len(train_samples), "train_files": self._relative(train_samples),
                           "trainable_parameters": adapter.trainable_parameters,
                           "train_metrics": adapter.metrics, "train_seconds": trained - start,
                           "eval_seconds": time.perf_counter() - trained, "settings": settings}
                    self._save_adapter(adapter, self._adapter_dir("base2novel", preset, key, shots, seed))
                    self.store.save(path, rec)
                    records[(key, preset, seed)] = rec
                    self.computed += 1
                    cells_bar.update(1)
                    log.info("base2novel %s %s seed %d: base %.2f novel %.2f HM %.2f", key, preset, seed, b, n,
                             rec["hm"])
                del test
        out = {}
        for preset in presets:
            cells = [records[(d, preset, s)] for d in keys for s in seeds]
            summary = summarize_base2novel({d: [(records[(d, preset, s)]["base"], records[(d, preset, s)]["novel"])
                                               for s in seeds] for d in keys})
            out[preset] = {**summary, "trainable_parameters": cells[0]["trainable_parameters"], "cells": cells}
        return out

    # ---- all-class few-shot --------------------------------------------------------------

    def fewshot(self, datasets: Sequence[str], seeds: Sequence[int], shots_list: Sequence[int],
                preset: str = "mmlop") -> dict[int, dict]:
        """All-class few-shot cells for every (dataset, shots, seed): train on `shots` images of
        every class, test on the whole test split.

        Returns:
            shots -> :func:`~mmlop_core.eval.protocol.summarize_accuracy` output plus ``"cells"``.
        """
        keys = [resolve_dataset_name(d) for d in datasets]
        records: dict[tuple[str, int, int], dict] = {}
        plan = [(d, k, s) for d in keys for k in shots_list for s in seeds]
        with self._bar(total=len(plan), desc="fewshot cells", unit="cell") as cells_bar:
            for key in keys:
                pending = self._reuse_cells("fewshot", key, [(k, preset, k, s) for k in shots_list for s in seeds],
                                            records, cells_bar)
                if not pending:
                    continue
                ds = load_dataset(key, self.settings.data_root)
                test = self._test_images(ds)
                for k, seed, a_cfg, t_cfg, settings, path in pending:
                    start = time.perf_counter()
                    train_samples = few_shot(ds.train, k, seed)
                    adapter = self.train(train_samples, ds.classnames, a_cfg, t_cfg,
                                         desc=f"{key} {k}-shot seed {seed}")
                    trained = time.perf_counter()
                    acc = self._accuracy(adapter, test)
                    rec = {"task": "fewshot", "dataset": key, "preset": preset, "seed": seed, "shots": k,
                           "accuracy": acc, "classes": ds.num_classes, "test_images": len(test),
                           "train_images": len(train_samples), "train_files": self._relative(train_samples),
                           "trainable_parameters": adapter.trainable_parameters,
                           "train_metrics": adapter.metrics, "train_seconds": trained - start,
                           "eval_seconds": time.perf_counter() - trained, "settings": settings}
                    self._save_adapter(adapter, self._adapter_dir("fewshot", preset, key, k, seed))
                    self.store.save(path, rec)
                    records[(key, k, seed)] = rec
                    self.computed += 1
                    cells_bar.update(1)
                    log.info("fewshot %s %d-shot seed %d: %.2f", key, k, seed, acc)
                del test
        out = {}
        for k in shots_list:
            summary = summarize_accuracy({d: [records[(d, k, s)]["accuracy"] for s in seeds] for d in keys})
            out[k] = {**summary, "cells": [records[(d, k, s)] for d in keys for s in seeds]}
        return out

    # ---- domain generalisation -----------------------------------------------------------

    def xd(self, seeds: Sequence[int], preset: str = "mmlop", shots: int = 16, source: str = "imagenet",
           targets: Sequence[str] = IMAGENET_VARIANTS) -> dict:
        """Train on all classes of `source` (per seed), test on its test split and on each target
        with the target's own class names (ImageNet-A/-R: their 200 classes, open vocabulary).

        Returns:
            ``{"source": summary, "targets": summary over targets}`` as
            :func:`~mmlop_core.eval.protocol.summarize_accuracy`, plus ``"cells"``.
        """
        source = resolve_dataset_name(source)
        targets = [resolve_dataset_name(t) for t in targets]
        records: dict[tuple[str, int], dict] = {}
        adapters: dict[int, Adapter] = {}
        plan = [(d, s) for d in [source, *targets] for s in seeds]
        with self._bar(total=len(plan), desc="xd cells", unit="cell") as cells_bar:
            src_cfg: dict[int, tuple[AdapterConfig, TrainConfig, dict]] = {}
            pending_src = []
            for seed in seeds:
                a_cfg, t_cfg = self.configs("xd", preset, source, seed)
                settings = self.cell_settings(a_cfg, t_cfg, shots)
                src_cfg[seed] = (a_cfg, t_cfg, settings)
                rec = self.store.load(self.store.path("xd", preset, source, shots, seed), settings)
                if rec is not None:
                    records[(source, seed)] = rec
                    self.reused += 1
                    cells_bar.update(1)
                else:
                    pending_src.append(seed)
            if pending_src:
                ds = load_dataset(source, self.settings.data_root)
                test = self._test_images(ds)
                for seed in pending_src:
                    a_cfg, t_cfg, settings = src_cfg[seed]
                    start = time.perf_counter()
                    train_samples = few_shot(ds.train, shots, seed)
                    adapter = self.train(train_samples, ds.classnames, a_cfg, t_cfg,
                                         desc=f"{source} {preset} seed {seed}")
                    trained = time.perf_counter()
                    acc = self._accuracy(adapter, test)
                    rec = {"task": "xd", "dataset": source, "role": "source", "preset": preset, "seed": seed,
                           "shots": shots, "accuracy": acc, "classes": ds.num_classes, "test_images": len(test),
                           "train_images": len(train_samples), "train_files": self._relative(train_samples),
                           "trainable_parameters": adapter.trainable_parameters,
                           "train_metrics": adapter.metrics, "train_seconds": trained - start,
                           "eval_seconds": time.perf_counter() - trained, "settings": settings}
                    self._save_adapter(adapter, self._adapter_dir("xd", preset, source, shots, seed))
                    self.store.save(self.store.path("xd", preset, source, shots, seed), rec)
                    records[(source, seed)] = rec
                    adapters[seed] = adapter
                    self.computed += 1
                    cells_bar.update(1)
                    log.info("xd source %s seed %d: %.2f", source, seed, acc)
                del test
            for key in targets:
                pending = []
                for seed in seeds:
                    settings = {**src_cfg[seed][2], "source": source}
                    path = self.store.path("xd", preset, key, shots, seed)
                    rec = self.store.load(path, settings)
                    if rec is not None:
                        records[(key, seed)] = rec
                        self.reused += 1
                        cells_bar.update(1)
                    else:
                        pending.append((seed, settings, path))
                if not pending:
                    continue
                ds = load_dataset(key, self.settings.data_root)
                test = self._test_images(ds)
                for seed, settings, path in pending:
                    adapter = adapters.get(seed) or self._load_source_adapter(preset, source, shots, seed)
                    adapters[seed] = adapter
                    start = time.perf_counter()
                    acc = self._accuracy(adapter, test, names=ds.classnames)
                    rec = {"task": "xd", "dataset": key, "role": "target", "source": source, "preset": preset,
                           "seed": seed, "shots": shots, "accuracy": acc, "classes": ds.num_classes,
                           "test_images": len(test), "trainable_parameters": adapter.trainable_parameters,
                           "eval_seconds": time.perf_counter() - start, "settings": settings}
                    self.store.save(path, rec)
                    records[(key, seed)] = rec
                    self.computed += 1
                    cells_bar.update(1)
                    log.info("xd target %s seed %d: %.2f", key, seed, acc)
                del test
        src = summarize_accuracy({source: [records[(source, s)]["accuracy"] for s in seeds]})
        tgt = summarize_accuracy({t: [records[(t, s)]["accuracy"] for s in seeds] for t in targets})
        return {"source": src, "targets": tgt, "cells": [records[(d, s)] for d in [source, *targets] for s in seeds]}

    def _load_source_adapter(self, preset: str, source: str, shots: int, seed: int) -> Adapter:
        directory = self._adapter_dir("xd", preset, source, shots, seed)
        try:
            return load_adapter(directory, self.backbone)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; delete {self.store.path('xd', preset, source, shots, seed)} to retrain "
                                  f"the {source} adapter of seed {seed}") from exc


__all__ = ["ABLATION_PRESETS", "DEFAULT_EPOCHS", "EvalSettings", "Harness", "PROTOCOL_VERSION"]
