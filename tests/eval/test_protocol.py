"""Protocol arithmetic against hand-computed values (no backbone)."""
from __future__ import annotations

import math

import pytest

from mmlop_core import sample_few_shot
from mmlop_core.errors import DataError
from mmlop_core.eval import (Sample, base_novel_labels, few_shot, harmonic_mean, mean_std, subsample_classes,
                             summarize_accuracy, summarize_base2novel)


@pytest.mark.parametrize("c, base, novel", [(10, 5, 5), (7, 4, 3), (2, 1, 1), (47, 24, 23), (101, 51, 50)])
def test_base_novel_split_is_first_ceil_half(c, base, novel):
    b, n = base_novel_labels(c)
    assert b == list(range(base)) and n == list(range(base, c)) and len(n) == novel


def test_base_novel_needs_two_classes():
    with pytest.raises(DataError, match="at least 2 classes"):
        base_novel_labels(1)


def test_subsample_relabels_in_sorted_order():
    samples = [Sample(f"{y}-{i}", y) for y in range(5) for i in range(2)]
    novel = subsample_classes(samples, [3, 4])
    assert [(s.path, s.label) for s in novel] == [("3-0", 0), ("3-1", 0), ("4-0", 1), ("4-1", 1)]


def test_few_shot_is_seeded_per_class_and_matches_sample_few_shot():
    samples = [Sample(f"img{i}", i % 4) for i in range(40)]  # 10 per class
    a, b, c = few_shot(samples, 3, seed=1), few_shot(samples, 3, seed=1), few_shot(samples, 3, seed=2)
    assert a == b and a != c
    assert sorted(s.label for s in a) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert a == [samples[i] for i in sample_few_shot([s.label for s in samples], 3, 1)]
    assert few_shot(samples, None, 1) == samples
    assert len(few_shot(samples, 50, 1)) == 40  # classes with fewer images keep all


def test_harmonic_mean_hand_values():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)  # 68.5714...
    assert harmonic_mean(69.34, 74.22) == pytest.approx(71.70, abs=0.005)  # zero-shot CLIP row
    assert harmonic_mean(84.26, 76.10) == pytest.approx(79.97, abs=0.005)  # PromptSRC row
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_mean_std_is_population_std():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, math.sqrt(2 / 3)))


def test_summary_averages_b_and_n_then_takes_hm():
    s = summarize_base2novel({"a": [(80.0, 60.0), (70.0, 50.0)], "b": [(90.0, 70.0), (100.0, 80.0)]})
    a, b, avg = s["datasets"]["a"], s["datasets"]["b"], s["average"]
    assert (a["base"], a["base_std"], a["novel"], a["novel_std"]) == pytest.approx((75.0, 5.0, 55.0, 5.0))
    assert a["hm"] == pytest.approx(2 * 75 * 55 / 130)  # 63.4615
    assert a["hm_seed_mean"] == pytest.approx((2 * 80 * 60 / 140 + 2 * 70 * 50 / 120) / 2)
    assert b["hm"] == pytest.approx(2 * 95 * 75 / 170)  # 83.8235
    assert (avg["base"], avg["novel"]) == pytest.approx((85.0, 65.0))
    assert avg["hm"] == pytest.approx(2 * 85 * 65 / 150)  # 73.6667, not the mean of per-dataset HMs
    assert avg["hm"] != pytest.approx((a["hm"] + b["hm"]) / 2)


def test_accuracy_summary():
    s = summarize_accuracy({"x": [50.0, 70.0], "y": [90.0]})
    assert s["datasets"]["x"] == {"accuracy": 60.0, "std": 10.0, "seeds": 2}
    assert s["average"] == {"accuracy": 75.0, "datasets": 2}
