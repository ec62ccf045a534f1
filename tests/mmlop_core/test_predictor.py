"""Predictor: top-k, mixed-adapter batches, open vocabulary (docs/METHOD.md section 6)."""
from __future__ import annotations

import pytest
import torch
from utils.core import fashion, quick_adapter, tiny_backbone

import mmlop_core as m


@pytest.fixture(scope="module")
def adapters():
    return [quick_adapter("mmlop", seed=1), quick_adapter("mmlop", seed=2, classes=4),
            quick_adapter("mmlop", seed=3, drift="both")]


def test_mixed_adapter_batch_equals_per_adapter_results(adapters):
    pred = m.Predictor(tiny_backbone())
    images = fashion("test")[0][:6]
    items = [(adapters[i % 3], im) for i, im in enumerate(images)]
    mixed = pred.classify_mixed(items, top_k=3)
    for (a, im), got in zip(items, mixed):
        alone = pred.classify(a, [im], top_k=3)[0]
        assert [p.label for p in got] == [p.label for p in alone]
        assert got[0].score == pytest.approx(alone[0].score, abs=1e-5)
    pixels = pred.pixels(images)
    rows = pred.logits_mixed([a for a, _ in items], pixels)
    for i, (a, _) in enumerate(items):
        assert torch.allclose(rows[i], pred.logits(a, pixels[i:i + 1])[0], atol=1e-5)


def test_top_k_is_sorted_probabilities(adapters):
    res = m.Predictor(tiny_backbone()).classify(adapters[1], fashion("test")[0][:2], top_k=10)
    assert len(res[0]) == 4  # capped at C
    scores = [p.score for p in res[0]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
    assert {p.label for p in res[0]} == set(adapters[1].class_names)


def test_open_vocabulary_class_names(adapters):
    pred = m.Predictor(tiny_backbone())
    res = pred.classify(adapters[0], fashion("test")[0][:2], top_k=2, class_names=["sneaker", "bag", "dress"])
    assert {p.label for p in res[0]} <= {"sneaker", "bag", "dress"}
    same = pred.classify(adapters[0], fashion("test")[0][:2], top_k=2, class_names=adapters[0].class_names)
    assert [p.label for p in same[0]] == [p.label for p in pred.classify(adapters[0], fashion("test")[0][:2], top_k=2)[0]]


@pytest.mark.parametrize("kwargs, fragment", [({"top_k": 0}, "top_k=0"), ({"class_names": ["a", "a"]}, "appears more than once")])
def test_bad_requests_are_data_errors(adapters, kwargs, fragment):
    with pytest.raises(m.DataError, match=fragment):
        m.Predictor(tiny_backbone()).classify(adapters[0], fashion("test")[0][:1], **kwargs)
    with pytest.raises(m.DataError, match="no images"):
        m.Predictor(tiny_backbone()).classify(adapters[0], [])
