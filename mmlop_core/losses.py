"""Self-regulating consistency loss (LSCL).

docs/METHOD.md section 3 ([paper] feature- and logit-level consistency; [recon] the form, after
PromptSRC's mutual-agreement loss, Khattak et al. ICCV 2023, eq. 3-5):

    L = CE(z_hat, y) + lambda_t * mean|t_hat - t0| + lambda_v * mean|f_hat - f0|
        + lambda_kl * KL(softmax(z0) || softmax(z_hat))

t = text features, f = image features, all L2-normalised; z = logit_scale * cosine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossTerms:
    """The total loss and its detached parts (floats) for logging."""

    total: torch.Tensor
    ce: float
    text: float
    image: float
    kl: float


# CLIP ViT-B/16 (OpenAI), where PromptSRC chose its weights: learned logit scale and feature width.
REFERENCE_LOGIT_SCALE = 100.0
REFERENCE_DIM = 512


def feature_weight_scale(logit_scale: float, dim: int) -> float:
    """(s / 100) * sqrt(D / 512): the factor ``LSCLScale.BACKBONE`` applies to lambda_text and lambda_image.

    The cross-entropy's gradient with respect to a feature grows linearly with the logit scale s;
    an L1 mean over (N x D) differences of unit vectors has a per-feature gradient of norm
    sqrt(D) / (N * D) = 1 / (N * sqrt(D)). Multiplying the weights by this factor keeps their pull
    against CE what it is on CLIP ViT-B/16 (s = 100, D = 512), where PromptSRC set 25 and 10
    (docs/METHOD.md section 3, [recon]; evidence in docs/TINY_EVAL.md). The KL term is not scaled:
    scaling it by 100 / s as well lowered base accuracy below zero-shot on the first mmlop-tiny weights.

    Args:
        logit_scale: s, the backbone's exp(logit_scale), > 0.
        dim: D, the width of the joint embedding, >= 1.

    Returns:
        A positive float: 1.0 at s = 100 and D = 512 (OpenAI's ViT-B/16: 1.00003), 0.1179 for
        ``mmlop-tiny``/``fmnist`` (s = 23.574, D = 128).
    """
    return (float(logit_scale) / REFERENCE_LOGIT_SCALE) * math.sqrt(dim / REFERENCE_DIM)


def lscl_loss(logits: torch.Tensor, labels: torch.Tensor,
              text_features: torch.Tensor, frozen_text_features: torch.Tensor,
              image_features: torch.Tensor, frozen_image_features: torch.Tensor,
              frozen_logits: torch.Tensor,
              lambda_text: float, lambda_image: float, lambda_kl: float,
              kl_reduction: str = "batchmean") -> LossTerms:
    """Cross-entropy plus the LSCL consistency terms.

    Args:
        logits: z_hat, FloatTensor (B, C), prompted image vs prompted class features.
        labels: LongTensor (B,) in [0, C).
        text_features / frozen_text_features: t_hat, t0, FloatTensor (C, D), L2-normalised.
        image_features / frozen_image_features: f_hat, f0, FloatTensor (B, D), L2-normalised.
        frozen_logits: z0, FloatTensor (B, C), frozen image vs frozen class features.
        lambda_text, lambda_image, lambda_kl: weights (defaults 25, 10, 1); a zero weight
            skips its term.
        kl_reduction: ``"batchmean"`` (default) or ``"numel"`` (see Returns).

    Returns:
        :class:`LossTerms`; ``total`` is a scalar FloatTensor with grad. The L1 terms are means
        over all elements. The KL term with ``kl_reduction="batchmean"`` is KL(p0 || p_hat) of
        each image averaged over the batch (the formula as written); with ``"numel"`` it is
        summed over the batch and divided by B * C, as PromptSRC's trainer computes
        ``L_SCL_logits`` (``reduction='sum'`` then ``/ logits.numel()``): the same value / C.
    """
    ce = F.cross_entropy(logits.float(), labels)
    total = ce
    text = image = kl = torch.zeros((), device=logits.device)
    if lambda_text:
        text = F.l1_loss(text_features.float(), frozen_text_features.float())
        total = total + lambda_text * text
    if lambda_image:
        image = F.l1_loss(image_features.float(), frozen_image_features.float())
        total = total + lambda_image * image
    if lambda_kl:
        kl = F.kl_div(F.log_softmax(logits.float(), dim=-1), F.log_softmax(frozen_logits.float(), dim=-1),
                      reduction="sum", log_target=True)
        kl = kl / (logits.numel() if str(getattr(kl_reduction, "value", kl_reduction)) == "numel" else logits.shape[0])
        total = total + lambda_kl * kl
    return LossTerms(total=total, ce=float(ce.detach()), text=float(text.detach()),
                     image=float(image.detach()), kl=float(kl.detach()))
