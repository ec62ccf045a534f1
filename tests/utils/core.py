"""Factories for the core library tests: tiny backbone, real Fashion-MNIST photos, quick adapters."""
from __future__ import annotations

import functools
import time
import types
from pathlib import Path

import torch

import mmlop_core as m

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fashion_mnist"
TRAIN_DIR = FIXTURES / "train"
TEST_DIR = FIXTURES / "test"


@functools.lru_cache(maxsize=4)
def tiny_backbone(seed: int = 0) -> m.Backbone:
    """`mmlop-tiny` with seeded random weights (cached per process; never modified by tests)."""
    return m.load_backbone(m.TINY_MODEL, "none", seed=seed)


@functools.lru_cache(maxsize=2)
def fashion(split: str = "train"):
    """(images, labels, class_names) of the committed Fashion-MNIST photos (32 train / 50 test per class)."""
    return m.load_class_folders(TRAIN_DIR if split == "train" else TEST_DIR)


def quick_adapter(preset: str = "mmlop", steps: int = 3, seed: int = 1, classes: int = 3, **overrides) -> m.Adapter:
    """A few-step adapter on `classes` Fashion-MNIST classes (fast; for shape/IO tests)."""
    images, labels, names = fashion("train")
    keep = [i for i, y in enumerate(labels) if y < classes]
    return m.train_adapter(tiny_backbone(), [images[i] for i in keep], [labels[i] for i in keep], names[:classes],
                           m.AdapterConfig.from_preset(preset, **overrides),
                           m.TrainConfig(shots=4, epochs=1, batch_size=4, seed=seed, max_steps=steps, warmup_epochs=0,
                                         lr=0.01))


def random_pixels(n: int, seed: int = 0) -> torch.Tensor:
    """FloatTensor (n, 3, 64, 64) of seeded noise at the tiny backbone's input size."""
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


class SlowSteps:
    """A trainer callback under which every step "takes" ``seconds``: its ``on_progress`` moves
    the clock ``mmlop_core.trainer`` reads (``time.perf_counter``, patched with ``monkeypatch``)
    on, so a test spends a time budget in training without sleeping. ``seen``: the progress."""

    def __init__(self, seconds: float, monkeypatch) -> None:
        from mmlop_core import trainer

        self.seen, self.offset, self.seconds = [], 0.0, seconds
        clock = types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + self.offset)
        monkeypatch.setattr(trainer, "time", clock)

    def on_progress(self, p) -> None:
        self.seen.append(p)
        self.offset += self.seconds
