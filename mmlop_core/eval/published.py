"""Published numbers placed beside ours in the reports (docs/METHOD.md section 7 and the abstract).

All at ViT-B/16, 16 shots (base-to-novel, domain generalisation) and mean of 3 seeds, averaged
over the 11 datasets of :data:`~mmlop_core.eval.datasets.BASE_TO_NOVEL_DATASETS`.
"""
from __future__ import annotations

# Base-to-novel averages over 11 datasets: method -> (base, novel, HM, trainable parameters).
# None = not published in the material we have (MMLoP's abstract gives only its HM).
BASE2NOVEL: dict[str, tuple[float | None, float | None, float, str]] = {
    "Zero-shot CLIP": (69.34, 74.22, 71.70, "0"),
    "CoOp": (82.69, 63.22, 71.66, "2K"),
    "CoCoOp": (80.47, 71.69, 75.83, "35K"),
    "MaPLe": (82.28, 75.14, 78.55, "3.55M"),
    "IVLP": (84.21, 71.79, 77.51, "46K"),
    "PromptSRC": (84.26, 76.10, 79.97, "46K"),
    "CLIP-LoRA": (84.10, 74.80, 79.18, "184K"),
    "MMLoP": (None, None, 79.70, "11.5K"),
}

# MMLoP's novel-accuracy gain over IVLP, averaged over the 11 datasets (abstract).
MMLOP_NOVEL_GAIN_OVER_IVLP = 4.19

# All-class few-shot averages of MMLoP over 11 datasets: shots -> accuracy %.
FEWSHOT_MMLOP: dict[int, float] = {4: 77.5, 8: 79.6, 16: 81.5}

# Domain generalisation: MMLoP's mean accuracy on ImageNet-V2/-Sketch/-A/-R after training on
# ImageNet (16 shots).
XD_MMLOP_MEAN = 60.46

__all__ = ["BASE2NOVEL", "FEWSHOT_MMLOP", "MMLOP_NOVEL_GAIN_OVER_IVLP", "XD_MMLOP_MEAN"]
