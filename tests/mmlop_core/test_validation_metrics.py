"""Held-out validation metrics of a training job (issue 12 E.22).

Images beyond `shots` per class are not trained on; the adapter's metrics report its accuracy
and per-class recall on them, scored as served (eval preprocessing, Predictor).
"""
from __future__ import annotations

import functools
import json

import pytest
from utils.core import SlowSteps, fashion, tiny_backbone

import mmlop_core as m


@functools.lru_cache(maxsize=1)
def _fmnist_backbone() -> m.Backbone:
    """The shipped tiny CLIP pretrained on Fashion-MNIST: trousers and bags read apart."""
    return m.load_backbone(m.TINY_MODEL, "fmnist")


def _two_classes(first: str, second: str):
    images, labels, names = fashion("train")
    pick = [names.index(first), names.index(second)]
    keep = [i for i, y in enumerate(labels) if y in pick]
    return [images[i] for i in keep], [pick.index(labels[i]) for i in keep], [first, second]


def test_images_beyond_shots_are_scored_as_held_out_validation():
    bb = _fmnist_backbone()
    images, labels, names = _two_classes("trouser", "bag")  # 32 photos each
    adapter = m.train_adapter(bb, images, labels, names, m.AdapterConfig(),
                              m.TrainConfig(shots=4, epochs=2, batch_size=4, seed=1))
    metrics = adapter.metrics
    chosen = set(m.sample_few_shot(labels, 4, seed=1))
    held = [i for i in range(len(labels)) if i not in chosen]
    assert metrics["train_images"] == 8 and metrics["val_images"] == len(held) == 56

    # the same numbers, computed independently through the serving path
    preds = m.Predictor(bb).classify(adapter, [images[i] for i in held], top_k=1)
    hits = [p[0].label == names[labels[i]] for p, i in zip(preds, held)]
    assert metrics["val_accuracy"] == pytest.approx(sum(hits) / len(hits))
    assert list(metrics["val_recall"]) == names
    for c, name in enumerate(names):
        mine = [h for h, i in zip(hits, held) if labels[i] == c]
        assert metrics["val_recall"][name] == pytest.approx(sum(mine) / len(mine))

    assert metrics["val_accuracy"] >= 0.9  # separable classes on a backbone that knows them
    assert json.loads(json.dumps(metrics)) == metrics  # stored as the job's metrics JSON


@pytest.mark.parametrize("shots", [32, None])
def test_no_validation_metrics_when_shots_cover_every_image(shots):
    images, labels, names = _two_classes("trouser", "bag")
    adapter = m.train_adapter(tiny_backbone(), images, labels, names, m.AdapterConfig(),
                              m.TrainConfig(shots=shots, epochs=1, batch_size=16, max_steps=1))
    assert adapter.metrics["train_images"] == 64
    assert adapter.metrics["val_images"] == 0
    assert adapter.metrics["val_accuracy"] is None and adapter.metrics["val_recall"] is None


def test_a_class_with_no_extra_images_has_no_recall():
    images, labels, names = _two_classes("trouser", "bag")
    keep = [i for i, y in enumerate(labels) if y == 0] + [i for i, y in enumerate(labels) if y == 1][:4]
    adapter = m.train_adapter(tiny_backbone(), [images[i] for i in keep], [labels[i] for i in keep], names,
                              m.AdapterConfig(), m.TrainConfig(shots=4, epochs=1, batch_size=4, max_steps=1))
    assert adapter.metrics["val_images"] == 28
    assert adapter.metrics["val_recall"]["bag"] is None
    assert 0.0 <= adapter.metrics["val_recall"]["trouser"] <= 1.0


def test_cancel_during_validation_raises_training_canceled():
    class StopAfterTraining:
        """Lets both training steps pass their stop check, then asks to stop at the next check."""

        step, checks_after_last = 0, 0

        def on_progress(self, p):
            self.step = p.step

        def should_stop(self):
            if self.step < 2:
                return False
            self.checks_after_last += 1
            return self.checks_after_last > 1

    images, labels, names = _two_classes("trouser", "bag")
    with pytest.raises(m.TrainingCanceled, match="validation"):
        m.train_adapter(tiny_backbone(), images, labels, names, m.AdapterConfig(),
                        m.TrainConfig(shots=4, epochs=1, batch_size=4, max_steps=2), callbacks=[StopAfterTraining()])


def test_validation_stays_inside_the_time_budget_and_says_so(monkeypatch):
    """`max_seconds` bounds the whole call: a budget spent in training leaves no time to score
    (each step "takes" 100 s of a 60 s budget: the text features fit, step 1 spends it)."""
    images, labels, names = _two_classes("trouser", "bag")
    adapter = m.train_adapter(tiny_backbone(), images, labels, names, m.AdapterConfig(),
                              m.TrainConfig(shots=4, epochs=50, batch_size=4, max_seconds=60),
                              callbacks=[SlowSteps(100.0, monkeypatch)])
    metrics = adapter.metrics
    assert metrics["stopped_early"] == "max_seconds" and metrics["steps"] < 100
    assert metrics["val_images"] == 0 and metrics["val_accuracy"] is None and metrics["val_recall"] is None
    assert metrics["val_stopped_early"] == "max_seconds"
