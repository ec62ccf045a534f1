"""Preprocess-once test images and the cached frozen-feature path agree with the Predictor."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmlop_core import AdapterConfig, Predictor, TrainConfig, load_backbone, train_adapter
from mmlop_core.eval import CachedTestSplit, accuracy, load_dataset
from mmlop_core.eval.datasets import open_sample


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("mmlop-tiny", "none", device="cpu")


def _manual_accuracy(predictor: Predictor, adapter, images, labels, names=None) -> float:
    z = predictor.logits(adapter, predictor.pixels(images), names)
    return 100.0 * float((z.argmax(dim=-1) == torch.tensor(labels)).float().mean())


def test_uint8_cache_equals_backbone_preprocess(backbone, coop_root: Path):
    ds = load_dataset("dtd", coop_root)
    test = CachedTestSplit(backbone, ds.test, progress=False)
    assert test.pixels.dtype == torch.uint8 and test.pixels.shape == (len(ds.test), 3, 64, 64)
    images = [open_sample(s) for s in ds.test[:8]]
    expected = Predictor(backbone).pixels(images)
    assert torch.allclose(test.batch(torch.arange(8)), expected, atol=1e-6)
    assert test.labels.tolist() == [s.label for s in ds.test]


@pytest.mark.parametrize("preset", ["zeroshot", "coop", "mmlop"])
def test_accuracy_matches_predictor(backbone, coop_root: Path, preset: str):
    ds = load_dataset("dtd", coop_root)
    base = [s for s in ds.train if s.label < 4]
    adapter = train_adapter(backbone, [open_sample(s) for s in base], [s.label for s in base], ds.classnames[:4],
                            AdapterConfig.from_preset(preset, template=ds.template), TrainConfig(shots=1, epochs=1))
    test = CachedTestSplit(backbone, ds.test, progress=False)
    predictor = Predictor(backbone)
    rows = (test.labels >= 4).nonzero().flatten()
    novel_names = ds.classnames[4:]
    got = accuracy(predictor, adapter, test, rows, test.labels[rows] - 4, novel_names, batch_size=4)
    images = [open_sample(ds.test[i]) for i in rows.tolist()]
    want = _manual_accuracy(predictor, adapter, images, (test.labels[rows] - 4).tolist(), novel_names)
    assert got == pytest.approx(want)
    base_rows = (test.labels < 4).nonzero().flatten()
    got = accuracy(predictor, adapter, test, base_rows, batch_size=64)
    want = _manual_accuracy(predictor, adapter, [open_sample(ds.test[i]) for i in base_rows.tolist()],
                            test.labels[base_rows].tolist())
    assert got == pytest.approx(want)
