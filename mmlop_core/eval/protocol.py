"""The evaluation protocol: base/novel class split, per-seed few-shot sampling, HM and averages.

Follows CoOp/CoCoOp (``datasets/oxford_pets.py`` ``subsample_classes``, ``parse_test_res.py``)
and PromptSRC's base-to-novel tables (docs/METHOD.md section 7):

- base = the first ceil(C/2) labels in sorted order, novel = the rest; each half is relabelled
  0.. in that order and scored against its own class names only;
- few-shot training images are drawn per seed from the full train split (all classes) and
  then restricted to the base half, as CoOp does (sample, then subsample classes). Sampling is
  :func:`mmlop_core.sample_few_shot` (torch generator seeded with the seed, one ``randperm``
  per class in label order); it is deterministic per seed but not bit-identical to CoOp's
  ``random.sample`` pickles, so the images differ from CoOp's, the protocol does not;
- HM = 2BN/(B+N); per dataset the mean and the population std (``np.std``, as CoOp's
  ``parse_test_res.py``) over seeds, HM of the mean B and mean N; the average row averages B
  and N over datasets and takes the HM of those averages.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from ..data import sample_few_shot
from ..errors import DataError
from .datasets import Sample


def base_novel_labels(num_classes: int) -> tuple[list[int], list[int]]:
    """Split labels 0..C-1 into base (first ceil(C/2)) and novel (the rest).

    CoOp ``OxfordPets.subsample_classes``: ``m = math.ceil(n / 2)``, base = ``labels[:m]``.

    Raises:
        DataError: `num_classes` < 2 (no novel half).
    """
    if num_classes < 2:
        raise DataError(f"base-to-novel needs at least 2 classes, got {num_classes}")
    m = math.ceil(num_classes / 2)
    return list(range(m)), list(range(m, num_classes))


def subsample_classes(samples: Sequence[Sample], labels: Sequence[int]) -> list[Sample]:
    """Keep the samples whose label is in `labels`, relabelled to its position in `labels`."""
    relabel = {y: i for i, y in enumerate(labels)}
    return [Sample(s.path, relabel[s.label]) for s in samples if s.label in relabel]


def few_shot(samples: Sequence[Sample], shots: int | None, seed: int) -> list[Sample]:
    """At most `shots` samples per class drawn with `seed` (:func:`mmlop_core.sample_few_shot`),
    in their original order. ``shots=None`` keeps all."""
    idx = sample_few_shot([s.label for s in samples], shots, seed)
    return [samples[i] for i in idx]


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN/(B+N) (accuracies in %, or any unit); 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0, CoOp ``parse_test_res.py``) of `values`.

    Raises:
        DataError: no values.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise DataError("no values to average")
    mean = sum(vals) / len(vals)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))


def summarize_base2novel(per_dataset: Mapping[str, Sequence[tuple[float, float]]]) -> dict:
    """Per-dataset and average base/novel/HM from per-seed (base, novel) accuracies.

    Args:
        per_dataset: dataset -> list of (base %, novel %) per seed.

    Returns:
        ``{"datasets": {name: {"base", "base_std", "novel", "novel_std", "hm", "hm_seed_mean",
        "hm_seed_std", "seeds"}}, "average": {"base", "novel", "hm", "datasets"}}``; ``hm`` is
        the HM of the mean B and mean N (per dataset and, over datasets, of the averaged B and N).
    """
    rows = {}
    for name, pairs in per_dataset.items():
        b, b_std = mean_std(p[0] for p in pairs)
        n, n_std = mean_std(p[1] for p in pairs)
        h, h_std = mean_std(harmonic_mean(*p) for p in pairs)
        rows[name] = {"base": b, "base_std": b_std, "novel": n, "novel_std": n_std, "hm": harmonic_mean(b, n),
                      "hm_seed_mean": h, "hm_seed_std": h_std, "seeds": len(pairs)}
    avg_b = mean_std(r["base"] for r in rows.values())[0] if rows else float("nan")
    avg_n = mean_std(r["novel"] for r in rows.values())[0] if rows else float("nan")
    average = {"base": avg_b, "novel": avg_n, "hm": harmonic_mean(avg_b, avg_n) if rows else float("nan"),
               "datasets": len(rows)}
    return {"datasets": rows, "average": average}


def summarize_accuracy(per_dataset: Mapping[str, Sequence[float]]) -> dict:
    """Per-dataset mean/std over seeds and the plain average over datasets of the means.

    Returns:
        ``{"datasets": {name: {"accuracy", "std", "seeds"}}, "average": {"accuracy", "datasets"}}``.
    """
    rows = {}
    for name, accs in per_dataset.items():
        mean, std = mean_std(accs)
        rows[name] = {"accuracy": mean, "std": std, "seeds": len(accs)}
    avg = mean_std(r["accuracy"] for r in rows.values())[0] if rows else float("nan")
    return {"datasets": rows, "average": {"accuracy": avg, "datasets": len(rows)}}


__all__ = ["base_novel_labels", "few_shot", "harmonic_mean", "mean_std", "subsample_classes",
           "summarize_accuracy", "summarize_base2novel"]
