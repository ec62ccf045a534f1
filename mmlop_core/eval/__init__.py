"""Paper-reproduction evaluation harness (docs/METHOD.md section 7; CoOp/CoCoOp/PromptSRC protocol).

- :mod:`.datasets`: readers of the 11 datasets in CoOp's layout and the ImageNet variants.
- :mod:`.protocol`: base/novel split, per-seed few-shot sampling, HM and averages.
- :mod:`.testset`: test images preprocessed once, cached frozen features, batched accuracy.
- :mod:`.runner`: the base2novel, fewshot, xd and ablation tasks with resumable cells.
- :mod:`.report`: JSON + Markdown tables beside the published numbers.
- :mod:`.cli`: the ``mmlop eval`` typer group.

Pure library (torch, PIL, open_clip through :mod:`mmlop_core`); no service imports.
"""
from __future__ import annotations

from .datasets import (BASE_TO_NOVEL_DATASETS, IMAGENET_VARIANTS, SPECS, Dataset, Sample, load_dataset,
                       resolve_dataset_name)
from .protocol import (base_novel_labels, few_shot, harmonic_mean, mean_std, subsample_classes, summarize_accuracy,
                       summarize_base2novel)
from .runner import ABLATION_PRESETS, EvalSettings, Harness
from .testset import CachedTestSplit, accuracy

__all__ = [
    "ABLATION_PRESETS", "BASE_TO_NOVEL_DATASETS", "Dataset", "EvalSettings", "Harness", "IMAGENET_VARIANTS",
    "SPECS", "Sample", "CachedTestSplit", "accuracy", "base_novel_labels", "few_shot", "harmonic_mean",
    "load_dataset", "mean_std", "resolve_dataset_name", "subsample_classes", "summarize_accuracy",
    "summarize_base2novel",
]
