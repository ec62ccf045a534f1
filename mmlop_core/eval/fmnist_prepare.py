"""``mmlop eval prepare-fmnist OUT``: the built-in mini benchmark in CoOp's layout.

Writes, below OUT, one folder per dataset of :data:`~mmlop_core.eval.datasets.FMNIST_DATASETS`:

- ``fmnist/``: Fashion-MNIST's train and test photos as PNGs in ``images/{train,test}/<class>/``
  and ``split_zhou_FashionMNIST.json`` (CoOp's ``{"train"|"val"|"test": [[path, label,
  classname], ...]}``). Labels keep Fashion-MNIST's order, so base = the first 5 classes
  (t-shirt, trouser, pullover, dress, coat) and novel = the last 5 (docs/METHOD.md section 7).
- ``fmnist-sketch``, ``fmnist-negative``, ``fmnist-blur``, ``fmnist-v2``: test-only targets made by
  fixed transforms of the **test** photos (:mod:`mmlop_core.fmnist`): edge-map sketches, photo
  negatives, Gaussian blur, and seeded re-framing (shift and scale), the small counterparts of
  ImageNet-Sketch, -R, -A and -V2 for ``mmlop eval xd --source fmnist``.

The split file is written last (atomically), so a dataset whose split file exists is complete.
"""
from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import fmnist
from ..errors import DataError
from .datasets import FMNIST_DATASETS

# target dataset -> domain transform of mmlop_core.fmnist
TARGET_DOMAINS = {"fmnist-sketch": "sketch", "fmnist-negative": "negative", "fmnist-blur": "blur",
                  "fmnist-v2": "jitter"}


def _first_per_class(labels: np.ndarray, per_class: int | None) -> list[int]:
    """Indices of the first `per_class` photos of each class, in file order (all when None)."""
    if per_class is None:
        return list(range(len(labels)))
    if per_class < 1:
        raise DataError(f"per-class count {per_class} must be at least 1")
    keep: list[int] = []
    for c in range(len(fmnist.CLASS_NAMES)):
        keep.extend(np.flatnonzero(labels == c)[:per_class].tolist())
    return sorted(keep)


def _write_split_file(folder: Path, title: str, split: dict[str, list]) -> None:
    path = folder / f"split_zhou_{title}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(split))
    os.replace(tmp, path)


def _write_images(folder: Path, part: str, images: np.ndarray, labels: np.ndarray, indices: list[int],
                  domain: str, seed: int, tick: Callable[[], None]) -> list[list]:
    rng = random.Random(seed)
    entries = []
    for i in indices:
        name = fmnist.CLASS_NAMES[int(labels[i])]
        rel = f"{part}/{name.replace(' ', '_')}/{i:05d}.png"
        path = folder / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fmnist.apply_domain(images[i], domain, rng).save(path)
        entries.append([rel, int(labels[i]), name])
        tick()
    return entries


def prepare_fmnist(out: str | Path, source: str | Path = fmnist.DEFAULT_DIR, train_per_class: int | None = None,
                   test_per_class: int | None = None, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the Fashion-MNIST mini benchmark below `out` (see the module docstring).

    Args:
        out: data root to write (``--data-root`` of ``mmlop eval``).
        source: folder of Fashion-MNIST's IDX files.
        train_per_class / test_per_class: keep only the first N photos of each class (None: all,
            60,000 train and 10,000 test photos).
        on_progress: called as ``(written, total)`` after each image.

    Returns:
        ``{dataset key: {"train": n, "test": n, "folder": path}}``.

    Raises:
        DataError: missing or malformed Fashion-MNIST files, or a per-class count < 1.
    """
    out = Path(out)
    train_x, train_y = fmnist.read_split("train", source)
    test_x, test_y = fmnist.read_split("test", source)
    train_idx = _first_per_class(train_y, train_per_class)
    test_idx = _first_per_class(test_y, test_per_class)
    total = len(train_idx) + len(test_idx) * (1 + len(TARGET_DOMAINS))
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    summary = {}
    folder = out / "fmnist"
    split = {"train": _write_images(folder, "train", train_x, train_y, train_idx, "photo", 0, tick), "val": [],
             "test": _write_images(folder, "test", test_x, test_y, test_idx, "photo", 0, tick)}
    _write_split_file(folder, FMNIST_DATASETS["fmnist"], split)
    summary["fmnist"] = {"train": len(train_idx), "test": len(test_idx), "folder": str(folder)}
    for key, domain in TARGET_DOMAINS.items():
        folder = out / key
        split = {"train": [], "val": [], "test": _write_images(folder, "test", test_x, test_y, test_idx, domain, 0, tick)}
        _write_split_file(folder, FMNIST_DATASETS[key], split)
        summary[key] = {"train": 0, "test": len(test_idx), "folder": str(folder)}
    return summary


__all__ = ["TARGET_DOMAINS", "prepare_fmnist"]
