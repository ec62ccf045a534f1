"""Uniform drift correction (UDC).

docs/METHOD.md section 4 ([paper] removes a global shift of the prompted features; [recon] formula):
delta = mean over the scored classes of (t_hat_c - t0_c); corrected t_c = normalize(t_hat_c - delta).
It needs no labels, so it applies to unseen (novel) class names as well. The image side uses a
running mean of (f_hat - f0) over training images instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_drift(prompted: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """delta = mean_c (prompted_c - frozen_c).

    Args:
        prompted: FloatTensor (N, D), L2-normalised prompted features.
        frozen: FloatTensor (N, D), L2-normalised frozen features of the same rows.

    Returns:
        FloatTensor (D,).
    """
    return (prompted - frozen).mean(dim=0)


def correct_drift(features: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """normalize(features - delta), row-wise.

    The renormalisation matters: subtracting the same delta from every class feature without
    it would shift every logit of an image by the same amount (f . delta) and leave the softmax
    unchanged; after renormalisation the class features' directions and norms change.

    Args:
        features: FloatTensor (N, D).
        delta: FloatTensor (D,).

    Returns:
        FloatTensor (N, D), unit rows.
    """
    return F.normalize(features - delta, dim=-1)
