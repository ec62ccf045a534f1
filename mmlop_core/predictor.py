"""Batched prediction for one adapter or a mix of many adapters in one vision forward.

MMLOP.md section 6: an adapter's class features are fixed after training, so classifying costs
one prompted vision forward plus a (C x D) matmul. Vision prompts are per-row tensors, so a batch
may mix adapters; each output row is scored against its own adapter's class features.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from .adapter import Adapter
from .backbone import Backbone
from .config import DriftMode
from .encoders import encode_image
from .errors import BackboneMismatchError, ConfigError, DataError, NonFiniteOutputError
from .features import check_names_read_apart, served_class_features
from .images import to_rgb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One ranked label: `score` is a softmax probability in [0, 1]."""

    label: str
    score: float


@dataclass
class _Served:
    """Device tensors of one adapter for one class list."""

    class_names: list[str]
    class_features: torch.Tensor  # (C, D) fp32, unit rows
    vision_prompts: torch.Tensor | None  # (J_v, n, d_v)
    image_drift: torch.Tensor | None  # (D,)


class Predictor:
    """Classifies images against adapters on one shared frozen backbone.

    Open-vocabulary class lists cost one prompted text forward per (adapter, class list) and are
    kept in an LRU of `text_cache_size` entries.

    Raises (from its methods):
        BackboneMismatchError: an adapter was trained on another backbone.
        DataError: empty image list, bad `top_k`, or invalid class names.
    """

    def __init__(self, backbone: Backbone, text_cache_size: int = 256) -> None:
        self.backbone = backbone
        self._cache: OrderedDict[tuple[str, tuple[str, ...] | None], _Served] = OrderedDict()
        self._cache_size = text_cache_size

    def _served(self, adapter: Adapter, class_names: Sequence[str] | None) -> _Served:
        if adapter.backbone_hash != self.backbone.weights_hash:
            raise BackboneMismatchError(
                f"adapter trained on {adapter.backbone_name!r} ({adapter.backbone_hash[:12]}) cannot run on "
                f"{self.backbone.name!r} ({self.backbone.weights_hash[:12]})")
        names = None if class_names is None else tuple(n.strip() for n in class_names)
        key = (adapter.fingerprint, names)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        dev = self.backbone.device
        if names is None or list(names) == adapter.class_names:
            feats = adapter.class_features.to(dev)
            names_list = list(adapter.class_names)
        else:
            if not names or any(not n for n in names) or len(set(names)) != len(names):
                raise DataError("class_names must be distinct non-empty strings")
            check_names_read_apart(self.backbone, list(names))
            tp = adapter.text_prompts()
            feats = served_class_features(self.backbone, list(names), adapter.config,
                                          None if tp is None else tp.to(dev))
            names_list = list(names)
        vp = adapter.vision_prompts()
        use_img_drift = adapter.config.drift in (DriftMode.IMAGE, DriftMode.BOTH) and adapter.image_drift is not None
        served = _Served(names_list, feats.float(), None if vp is None else vp.to(dev),
                         adapter.image_drift.to(dev) if use_img_drift else None)
        self._cache[key] = served
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return served

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess PIL images: FloatTensor (B, 3, H, W) on the backbone's device."""
        if not images:
            raise DataError("no images to classify")
        return torch.stack([self.backbone.preprocess(to_rgb(im)) for im in images]).to(self.backbone.device)

    @torch.no_grad()
    def logits(self, adapter: Adapter, pixels: torch.Tensor, class_names: Sequence[str] | None = None) -> torch.Tensor:
        """logit_scale * cosine of prompted image features vs class features.

        Args:
            pixels: FloatTensor (B, 3, H, W) from :meth:`pixels`.

        Returns:
            FloatTensor (B, C), fp32.
        """
        return torch.stack(self.logits_mixed([adapter] * pixels.shape[0], pixels, [class_names] * pixels.shape[0]))

    @torch.no_grad()
    def logits_mixed(self, adapters: Sequence[Adapter], pixels: torch.Tensor,
                     class_names: Sequence[Sequence[str] | None] | None = None) -> list[torch.Tensor]:
        """Per-row logits for a batch whose rows belong to different adapters.

        One vision forward carries each row's own prompts (B, J_v, n, d_v); rows are then
        scored, grouped by adapter, against that adapter's class features.

        Args:
            adapters: B adapters (repeats allowed), one per row; all must share J_v and n when
                they have vision prompts.
            pixels: FloatTensor (B, 3, H, W).
            class_names: optional per-row class list override (open vocabulary).

        Returns:
            B FloatTensors (C_i,), fp32, in row order.
        """
        if len(adapters) != pixels.shape[0]:
            raise DataError(f"{len(adapters)} adapters for {pixels.shape[0]} images")
        names = list(class_names) if class_names is not None else [None] * len(adapters)
        served = [self._served(a, n) for a, n in zip(adapters, names)]
        feats = self._image_features(served, pixels)  # (B, D)
        rows: list[torch.Tensor | None] = [None] * len(served)
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(served):
            groups.setdefault(id(s), []).append(i)
        scale = self.backbone.model.logit_scale.exp().float()
        for idx in groups.values():
            s = served[idx[0]]
            z = scale * feats[idx] @ s.class_features.t()  # (b, C)
            for j, i in enumerate(idx):
                rows[i] = z[j]
        return rows  # type: ignore[return-value]

    def _image_features(self, served: list[_Served], pixels: torch.Tensor) -> torch.Tensor:
        model = self.backbone.model
        prompted = [s.vision_prompts is not None for s in served]
        if all(prompted):
            shapes = {tuple(s.vision_prompts.shape) for s in served}  # type: ignore[union-attr]
            if len(shapes) > 1:
                raise ConfigError(f"adapters in one batch have different vision prompt shapes {sorted(shapes)}")
            unique = {id(s): s for s in served}
            if len(unique) == 1:
                prompts = served[0].vision_prompts
            else:
                prompts = torch.stack([s.vision_prompts for s in served])  # (B, J, n, d_v)
            feats = encode_image(model, pixels, prompts)
        elif not any(prompted):
            feats = encode_image(model, pixels)
        else:
            feats = torch.empty(pixels.shape[0], self.backbone.embed_dim, device=pixels.device)
            on = [i for i, p in enumerate(prompted) if p]
            off = [i for i, p in enumerate(prompted) if not p]
            feats[on] = self._image_features([served[i] for i in on], pixels[on])
            feats[off] = encode_image(model, pixels[off]).float()
        feats = F.normalize(feats.float(), dim=-1)
        drift = [s.image_drift for s in served]
        if any(d is not None for d in drift):  # image-side UDC; zero delta keeps a unit row as is
            delta = torch.stack([d if d is not None else torch.zeros_like(feats[0]) for d in drift])
            feats = F.normalize(feats - delta, dim=-1)
        return feats

    def _rank(self, z: torch.Tensor, names: list[str], top_k: int) -> list[Prediction]:
        probs = z.float().softmax(dim=-1)
        if not bool(torch.isfinite(probs).all()):
            log.error("non-finite scores from backbone %s (%s): refusing to serve them", self.backbone.name,
                      self.backbone.weights_hash[:12])
            raise NonFiniteOutputError("the model produced non-finite scores (NaN or infinity); the backbone "
                                       "weights are corrupt or overflow")
        k = min(top_k, probs.shape[-1])
        vals, idx = probs.topk(k)
        return [Prediction(names[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())]

    def classify(self, adapter: Adapter, images: Sequence[Image.Image], top_k: int = 5,
                 class_names: Sequence[str] | None = None) -> list[list[Prediction]]:
        """Top-k labels and softmax probabilities per image for one adapter.

        Args:
            images: PIL images (any mode).
            top_k: labels per image (>= 1; capped at C).
            class_names: optional new class list (open vocabulary); default the adapter's.

        Raises:
            DataError: no images, top_k < 1, or bad class names.
            BackboneMismatchError: the adapter belongs to another backbone.
        """
        return self.classify_mixed([(adapter, im) for im in images], top_k, [class_names] * len(images))

    def classify_mixed(self, items: Sequence[tuple[Adapter, Image.Image]], top_k: int = 5,
                       class_names: Sequence[Sequence[str] | None] | None = None) -> list[list[Prediction]]:
        """Top-k per image for images of many adapters, in one vision forward.

        Args:
            items: (adapter, image) pairs.
            class_names: optional per-item class list overrides.

        Returns:
            One ranked list per item, in input order; equal to per-adapter :meth:`classify`.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise DataError(f"top_k={top_k!r} must be an integer >= 1")
        if not items:
            raise DataError("no images to classify")
        adapters = [a for a, _ in items]
        pixels = self.pixels([im for _, im in items])
        names = list(class_names) if class_names is not None else [None] * len(items)
        z = self.logits_mixed(adapters, pixels, names)
        served = [self._served(a, n) for a, n in zip(adapters, names)]
        return [self._rank(z[i], served[i].class_names, top_k) for i in range(len(items))]
