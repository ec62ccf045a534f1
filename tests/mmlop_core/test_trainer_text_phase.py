"""The text-feature phase before the first step (issue 12, B.5) is inside the time budget and
polls the callbacks' ``should_stop``: 40 classes x 61 templates is three text chunks."""
from __future__ import annotations

import pytest
from utils.core import fashion, tiny_backbone

import mmlop_core as m
from mmlop_core.errors import TimeBudgetExceeded

CLASSES = 40


def _forty_classes():
    images, _, _ = fashion("train")
    return [images[0]] * CLASSES, list(range(CLASSES)), [f"class {i:03d}" for i in range(CLASSES)]


class _Recorder:
    def __init__(self, stop: bool) -> None:
        self.stop, self.polls, self.progress = stop, 0, 0

    def on_progress(self, _p) -> None:
        self.progress += 1

    def should_stop(self) -> bool:
        self.polls += 1
        return self.stop


def test_cancel_is_seen_while_text_features_are_computed():
    images, labels, names = _forty_classes()
    cb = _Recorder(stop=True)
    with pytest.raises(m.TrainingCanceled, match="text features"):
        m.train_adapter(tiny_backbone(), images, labels, names,
                        train=m.TrainConfig(shots=1, epochs=1, batch_size=8), callbacks=[cb])
    assert cb.polls >= 1 and cb.progress == 0  # stopped before the first step


def test_text_features_are_polled_between_chunks():
    images, labels, names = _forty_classes()
    cb = _Recorder(stop=False)
    m.train_adapter(tiny_backbone(), images, labels, names,
                    train=m.TrainConfig(shots=1, epochs=1, batch_size=40, max_steps=1), callbacks=[cb])
    assert cb.progress == 1
    assert cb.polls >= 3  # two between the three text chunks, one after the step


def test_time_budget_spent_on_text_features_is_a_clear_error():
    images, labels, names = _forty_classes()
    with pytest.raises(TimeBudgetExceeded, match=r"max_seconds=0.001.*text features of 40 classes"):
        m.train_adapter(tiny_backbone(), images, labels, names,
                        train=m.TrainConfig(shots=1, epochs=1, batch_size=8, max_seconds=0.001))
