"""Batched prediction for one adapter or a mix of many adapters in one vision forward.

docs/METHOD.md section 6: an adapter's class features are fixed after training, so classifying costs
one prompted vision forward plus a (C x D) matmul. Vision prompts are per-row tensors, so a batch
may mix adapters; each output row is scored against its own adapter's class features.
"""
from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from .adapter import Adapter
from .backbone import Backbone
from .config import DriftMode
from .encoders import encode_image
from .errors import BackboneMismatchError, ConfigError, DataError, NonFiniteOutputError
from .features import check_class_names, frozen_class_features, run_steps, served_class_features_steps
from .images import to_rgb
from .templates import ensemble_templates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One ranked label: `score` is a softmax probability in [0, 1]."""

    label: str
    score: float


@dataclass
class ServedClasses:
    """What scoring images for one adapter against one class list needs, on the device.

    Built by :meth:`Predictor.serve`; a server may cache it (``nbytes`` is its device size).

    Attributes:
        class_names: C labels, in the order of the rows of ``class_features``.
        class_features: FloatTensor (C, D), fp32, unit rows (text-side UDC applied if configured).
        vision_prompts: FloatTensor (J_v, n, d_v) or None (no vision prompts).
        image_drift: FloatTensor (D,) when the adapter uses image-side UDC, else None.
    """

    class_names: list[str]
    class_features: torch.Tensor
    vision_prompts: torch.Tensor | None
    image_drift: torch.Tensor | None

    @property
    def nbytes(self) -> int:
        """Bytes of its tensors."""
        return sum(t.numel() * t.element_size() for t in (self.class_features, self.vision_prompts,
                                                           self.image_drift) if t is not None)

    def reordered(self, class_names: Sequence[str]) -> ServedClasses:
        """The same classes in the order ``class_names`` (a permutation of ``self.class_names``).

        Raises:
            DataError: ``class_names`` is not a permutation of the served names.
        """
        if list(class_names) == self.class_names:
            return self
        row = {n: i for i, n in enumerate(self.class_names)}
        if sorted(class_names) != sorted(self.class_names):
            raise DataError("class_names is not a permutation of the served class names")
        idx = torch.tensor([row[n] for n in class_names], device=self.class_features.device)
        return ServedClasses(list(class_names), self.class_features.index_select(0, idx), self.vision_prompts,
                             self.image_drift)


class Predictor:
    """Classifies images against adapters on one shared frozen backbone.

    Open-vocabulary class lists cost one prompted text forward per (adapter, class set) and are
    kept in an LRU of `text_cache_size` entries; the key ignores the order of the names.

    Args:
        backbone: the frozen :class:`Backbone` every adapter was trained on.
        text_cache_size: (adapter, class set) entries kept.
        autocast_dtype: run the vision forward under autocast to this dtype (e.g.
            ``torch.bfloat16`` on CUDA); None runs in the weights' dtype.

    Raises (from its methods):
        BackboneMismatchError: an adapter was trained on another backbone.
        DataError: empty image list, bad `top_k`, or invalid class names.
        NonFiniteOutputError: the backbone produced NaN or infinite scores.
    """

    def __init__(self, backbone: Backbone, text_cache_size: int = 256,
                 autocast_dtype: torch.dtype | None = None) -> None:
        self.backbone = backbone
        self.autocast_dtype = autocast_dtype
        self._cache: OrderedDict[tuple[str, tuple[str, ...] | None], ServedClasses] = OrderedDict()
        self._cache_size = text_cache_size

    def serve_steps(self, adapter: Adapter, class_names: Sequence[str] | None = None,
                    texts_per_step: int = 256) -> Generator[None, None, ServedClasses]:
        """:meth:`serve` as a generator of text-encoder steps (see
        :func:`~mmlop_core.features.served_class_features_steps`); its return value is the
        :class:`ServedClasses`. The checks run on the first ``next()``.

        Raises:
            BackboneMismatchError, DataError: as :meth:`serve`.
        """
        if adapter.backbone_hash != self.backbone.weights_hash:
            raise BackboneMismatchError(
                f"adapter trained on {adapter.backbone_name!r} ({adapter.backbone_hash[:12]}) cannot run on "
                f"{self.backbone.name!r} ({self.backbone.weights_hash[:12]})")
        dev = self.backbone.device
        names = None if class_names is None else [n.strip() for n in class_names]
        if names is None or names == adapter.class_names:
            feats = adapter.class_features.to(dev)
            names = list(adapter.class_names)
        else:
            check_class_names(self.backbone, names)
            tp = adapter.text_prompts()
            feats = yield from served_class_features_steps(self.backbone, names, adapter.config,
                                                           None if tp is None else tp.to(dev), texts_per_step)
        vp = adapter.vision_prompts()
        use_img_drift = adapter.config.drift in (DriftMode.IMAGE, DriftMode.BOTH) and adapter.image_drift is not None
        return ServedClasses(names, feats.float(), None if vp is None else vp.detach().to(dev),
                             adapter.image_drift.to(dev).float() if use_img_drift else None)

    def zeroshot_steps(self, class_names: Sequence[str], template: str = "a photo of a {}.",
                       texts_per_step: int = 256) -> Generator[None, None, ServedClasses]:
        """Zero-shot CLIP as a :class:`ServedClasses`, in text-encoder steps (no adapter).

        The class features are the frozen backbone's template ensemble (the 60 ImageNet
        templates of the CLIP paper plus `template`; :func:`~mmlop_core.features.frozen_class_features`),
        computed a few names per ``next()``; the generator's return value is the result.
        No prompts and no drift: images are scored by the frozen encoders alone.

        Raises:
            DataError: as :meth:`serve` for bad class names.
            ConfigError: `template` without exactly one ``{}``.
        """
        from .config import AdapterConfig

        names = [n.strip() for n in class_names]
        check_class_names(self.backbone, names)
        templates = ensemble_templates(AdapterConfig(template=template).template, True)
        step = max(1, texts_per_step // len(templates))
        parts = []
        for start in range(0, len(names), step):
            with torch.no_grad():
                parts.append(frozen_class_features(self.backbone, names[start:start + step], templates))
            yield
        return ServedClasses(names, torch.cat(parts).float(), None, None)

    def zeroshot(self, images: Sequence[Image.Image], class_names: Sequence[str], top_k: int = 5,
                 template: str = "a photo of a {}.") -> list[list[Prediction]]:
        """Top-k labels per image by zero-shot CLIP over `class_names` (see :meth:`zeroshot_steps`).

        Raises:
            DataError: no images, bad `top_k` or bad class names.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise DataError(f"top_k={top_k!r} must be an integer >= 1")
        served = run_steps(self.zeroshot_steps(class_names, template, texts_per_step=1024))
        pixels = self.pixels(images)
        return self.rank_served([served] * len(images), pixels, top_k)

    @torch.no_grad()
    def serve(self, adapter: Adapter, class_names: Sequence[str] | None = None) -> ServedClasses:
        """The device tensors that score images for `adapter` against `class_names` (uncached).

        Args:
            class_names: open-vocabulary class list (stripped), or None for the trained classes.

        Raises:
            BackboneMismatchError: the adapter belongs to another backbone.
            DataError: class names empty, repeated, with control characters, too long for the
                text context, or reading the same to the text encoder.
        """
        return run_steps(self.serve_steps(adapter, class_names, texts_per_step=1024))

    def _served(self, adapter: Adapter, class_names: Sequence[str] | None) -> ServedClasses:
        names = None if class_names is None else tuple(n.strip() for n in class_names)
        key = (adapter.fingerprint, None if names is None else tuple(sorted(names)))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
        else:
            hit = self.serve(adapter, None if key[1] is None else list(key[1]))
            self._cache[key] = hit
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return hit if names is None else hit.reordered(names)

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
            adapters: B adapters (repeats allowed), one per row.
            pixels: FloatTensor (B, 3, H, W).
            class_names: optional per-row class list override (open vocabulary).

        Returns:
            B FloatTensors (C_i,), fp32, in row order.
        """
        if len(adapters) != pixels.shape[0]:
            raise DataError(f"{len(adapters)} adapters for {pixels.shape[0]} images")
        names = list(class_names) if class_names is not None else [None] * len(adapters)
        return self.logits_served([self._served(a, n) for a, n in zip(adapters, names)], pixels)

    @torch.no_grad()
    def logits_served(self, served: Sequence[ServedClasses], pixels: torch.Tensor) -> list[torch.Tensor]:
        """logit_scale * cosine for each row against its own :class:`ServedClasses`.

        docs/METHOD.md section 6: one prompted vision forward for the whole batch (rows grouped by
        prompt shape), image-side UDC per row, then one (b x C) matmul per distinct class set.

        Args:
            served: B entries (repeats share one matmul), one per row.
            pixels: FloatTensor (B, 3, H, W) on the backbone's device.

        Returns:
            B FloatTensors (C_i,), fp32, in row order.
        """
        if len(served) != pixels.shape[0]:
            raise DataError(f"{len(served)} class sets for {pixels.shape[0]} images")
        feats = self._image_features(list(served), pixels)  # (B, D)
        rows: list[torch.Tensor | None] = [None] * len(served)
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(served):
            groups.setdefault(id(s.class_features), []).append(i)
        scale = self.backbone.model.logit_scale.exp().float()
        for idx in groups.values():
            s = served[idx[0]]
            z = scale * feats[idx] @ s.class_features.t()  # (b, C)
            for j, i in enumerate(idx):
                rows[i] = z[j]
        return rows  # type: ignore[return-value]

    def rank_served(self, served: Sequence[ServedClasses], pixels: torch.Tensor,
                    top_k: int | Sequence[int]) -> list[list[Prediction]]:
        """Top-k labels and softmax probabilities per row, each against its own class set.

        Args:
            served: B :class:`ServedClasses`, one per row.
            pixels: FloatTensor (B, 3, H, W) on the backbone's device.
            top_k: labels per row (one int, or one per row), each >= 1, capped at C.

        Raises:
            NonFiniteOutputError: a score is NaN or infinite (logged; never returned).
        """
        ks = [top_k] * len(served) if isinstance(top_k, int) else list(top_k)
        z = self.logits_served(served, pixels)
        return [self._rank(z[i], served[i].class_names, ks[i]) for i in range(len(served))]

    def _image_features(self, served: list[ServedClasses], pixels: torch.Tensor) -> torch.Tensor:
        """Unit image features (B, D) fp32: one prompted forward per vision-prompt shape."""
        model = self.backbone.model
        groups: dict[tuple[int, ...] | None, list[int]] = {}
        for i, s in enumerate(served):
            groups.setdefault(None if s.vision_prompts is None else tuple(s.vision_prompts.shape), []).append(i)
        feats = torch.empty(pixels.shape[0], self.backbone.embed_dim, device=pixels.device)
        autocast = (torch.autocast(pixels.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else contextlib.nullcontext())
        for shape, idx in groups.items():
            px = pixels if len(idx) == len(served) else pixels[idx]
            prompts = None
            if shape is not None:
                distinct = {id(served[i].vision_prompts): served[i].vision_prompts for i in idx}
                if len(distinct) == 1:
                    prompts = next(iter(distinct.values()))  # (J, n, d_v), shared by the group
                else:
                    order = {k: j for j, k in enumerate(distinct)}
                    stack = torch.stack(list(distinct.values()))  # (A, J, n, d_v)
                    pick = torch.tensor([order[id(served[i].vision_prompts)] for i in idx], device=stack.device)
                    prompts = stack[pick]  # (b, J, n, d_v)
            with autocast:
                out = encode_image(model, px) if prompts is None else encode_image(model, px, prompts)
            feats[idx] = out.float()
        feats = F.normalize(feats, dim=-1)
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
        served = [self._served(a, n) for a, n in zip(adapters, names)]
        return self.rank_served(served, pixels, top_k)
