"""The trained adapter: prompts plus the fixed class features served after training."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from .config import AdapterConfig
from .prompts import LowRankPrompts


@dataclass(eq=False)
class Adapter:
    """One tenant's MMLoP adapter (docs/METHOD.md section 6).

    Attributes:
        config: the adapter's shape and regularisation.
        class_names: C names, index = label.
        prompts: the trained :class:`LowRankPrompts` (fp32, CPU or device).
        class_features: FloatTensor (C, D), fp32, unit rows, UDC applied when configured.
        image_drift: FloatTensor (D,) running mean of f_hat - f0 over the last training epoch,
            or None; subtracted from image features when ``config.drift`` is image/both.
        backbone: :meth:`Backbone.describe` of the backbone it was trained on (name,
            pretrained, weights_hash, widths).
        metrics: training metrics (floats/ints/strings).
        train_config: the :class:`TrainConfig` used, as a dict (None if unknown).
    """

    config: AdapterConfig
    class_names: list[str]
    prompts: LowRankPrompts
    class_features: torch.Tensor
    image_drift: torch.Tensor | None
    backbone: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] | None = None

    @property
    def backbone_name(self) -> str:
        return self.backbone["name"]

    @property
    def backbone_pretrained(self) -> str:
        return self.backbone["pretrained"]

    @property
    def backbone_hash(self) -> str:
        return self.backbone["weights_hash"]

    @property
    def trainable_parameters(self) -> int:
        """Trainable scalars of the prompts (11,556 for `mmlop` at ViT-B/16)."""
        return self.prompts.trainable_parameters

    @cached_property
    def fingerprint(self) -> str:
        """sha256 hex of the prompt and class-feature tensors: a cache key for served tensors."""
        digest = hashlib.sha256()
        for name, t in sorted(self.prompts.state_dict().items()):
            digest.update(name.encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        digest.update(self.class_features.detach().cpu().contiguous().numpy().tobytes())
        digest.update("\x1f".join(self.class_names).encode())
        return digest.hexdigest()

    @torch.no_grad()
    def text_prompts(self) -> torch.Tensor | None:
        """FloatTensor (J_t, n, d_t), or None without text prompts."""
        return self.prompts.text_prompts().detach() if self.config.text_depth else None

    @torch.no_grad()
    def vision_prompts(self) -> torch.Tensor | None:
        """FloatTensor (J_v, n, d_v), or None without vision prompts."""
        return self.prompts.vision_prompts().detach() if self.config.vision_depth else None
