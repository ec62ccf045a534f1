"""Test images preprocessed once, frozen image features cached, and batched accuracy.

A test split is decoded, resized and centre-cropped once (the backbone's own eval transform,
up to its ``ToTensor``) and kept as uint8 (N, 3, H, W): a quarter of fp32's memory (ViT-B/16:
147 KiB per image). Every adapter, seed and preset evaluated on that split reuses it; the
float conversion and CLIP normalisation run per batch on the device. Frozen (unprompted)
image features are computed once per split and serve every adapter without vision prompts
(zero-shot, CoOp): then an evaluation is one (N x D) @ (D x C) product.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision import transforms
from tqdm import tqdm

from ..adapter import Adapter
from ..backbone import Backbone
from ..config import DriftMode
from ..encoders import encode_image
from ..features import served_class_features
from ..predictor import Predictor
from .datasets import Sample, check_files, open_sample

log = logging.getLogger(__name__)


def _split_preprocess(preprocess) -> tuple[transforms.Compose | None, torch.Tensor | None, torch.Tensor | None]:
    """(PIL steps before ToTensor, mean, std) of an open_clip eval transform; Nones if unrecognised."""
    steps = list(getattr(preprocess, "transforms", []))
    to_tensor = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    if to_tensor is None or to_tensor != len(steps) - 2 or not isinstance(steps[-1], transforms.Normalize):
        return None, None, None
    norm = steps[-1]
    return (transforms.Compose(steps[:to_tensor]), torch.tensor(norm.mean, dtype=torch.float32),
            torch.tensor(norm.std, dtype=torch.float32))


class _Decode(TorchDataset):
    def __init__(self, samples: Sequence[Sample], transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = self.transform(open_sample(self.samples[i]))
        if isinstance(img, torch.Tensor):
            return img
        return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


class CachedTestSplit:
    """One test split, preprocessed once.

    Attributes:
        labels: LongTensor (N,) class indices.
        pixels: uint8 (N, 3, H, W) on CPU (or fp32 already normalised when the backbone's
            transform is not Resize/CenterCrop/ToTensor/Normalize).
    """

    def __init__(self, backbone: Backbone, samples: Sequence[Sample], workers: int = 0,
                 progress: bool = True, desc: str = "preprocess") -> None:
        """Decode and preprocess `samples` (DataLoader with `workers` processes).

        Raises:
            DataError: an image file is missing (checked for all files before decoding).
            ImageError: a file is not a decodable image.
        """
        check_files(samples)
        self.backbone = backbone
        pil_steps, self._mean, self._std = _split_preprocess(backbone.preprocess)
        self._uint8 = pil_steps is not None
        transform = pil_steps if self._uint8 else backbone.preprocess
        loader = DataLoader(_Decode(samples, transform), batch_size=64, num_workers=workers, shuffle=False)
        chunks = []
        with tqdm(total=len(samples), desc=desc, unit="img", file=sys.stderr, leave=False,
                  disable=not progress, dynamic_ncols=True) as bar:
            for batch in loader:
                chunks.append(batch)
                bar.update(len(batch))
        self.pixels = torch.cat(chunks)  # (N, 3, H, W)
        self.labels = torch.tensor([s.label for s in samples], dtype=torch.long)  # (N,)
        self._frozen: torch.Tensor | None = None
        log.info("preprocessed %d test images (%s, %.1f MiB)", len(samples), self.pixels.dtype,
                 self.pixels.numel() * self.pixels.element_size() / 2**20)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Model-ready pixels of rows `idx`: FloatTensor (b, 3, H, W) on the backbone's device."""
        x = self.pixels[idx].to(self.backbone.device, non_blocking=True)
        if not self._uint8:
            return x
        mean = self._mean.to(x.device).view(1, 3, 1, 1)
        std = self._std.to(x.device).view(1, 3, 1, 1)
        return (x.float() / 255.0 - mean) / std

    @torch.no_grad()
    def frozen_features(self, batch_size: int = 64, precision: str = "auto") -> torch.Tensor:
        """Unprompted image features f0 of every row, computed once: FloatTensor (N, D), fp32,
        unit rows, on the backbone's device."""
        if self._frozen is None:
            feats = []
            for start in range(0, len(self), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(self)))
                with autocast(self.backbone.device, precision):
                    feats.append(F.normalize(encode_image(self.backbone.model, self.batch(idx)).float(), dim=-1))
            self._frozen = torch.cat(feats)
        return self._frozen


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast on CUDA (``auto`` = bf16); nothing on CPU or with ``fp32``."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


def _uses_frozen_images(adapter: Adapter) -> bool:
    """True when the adapter scores plain frozen image features (no vision prompts, no image UDC)."""
    image_udc = adapter.config.drift in (DriftMode.IMAGE, DriftMode.BOTH) and adapter.image_drift is not None
    return not adapter.config.vision_depth and not image_udc


@torch.no_grad()
def _class_features(backbone: Backbone, adapter: Adapter, names: list[str] | None) -> torch.Tensor:
    """Served class features (C, D) fp32 for `names` (the adapter's own when None), as
    :class:`Predictor` computes them (UDC included)."""
    if names is None or [n.strip() for n in names] == adapter.class_names:
        return adapter.class_features.to(backbone.device).float()
    tp = adapter.text_prompts()
    return served_class_features(backbone, [n.strip() for n in names], adapter.config,
                                 None if tp is None else tp.to(backbone.device)).float()


@torch.no_grad()
def accuracy(predictor: Predictor, adapter: Adapter, test: CachedTestSplit, rows: torch.Tensor | None = None,
             labels: torch.Tensor | None = None, class_names: Sequence[str] | None = None,
             batch_size: int = 64, precision: str = "auto") -> float:
    """Top-1 accuracy (%) of `adapter` on rows `rows` of `test` against `class_names`.

    Prompted adapters go through :meth:`Predictor.logits` in batches of `batch_size`; adapters
    without vision prompts reuse the cached frozen image features (one matmul).

    Args:
        rows: LongTensor (M,) row indices into `test` (default: all).
        labels: LongTensor (M,) targets indexing `class_names` (default: ``test.labels[rows]``).
        class_names: names scored (default: the adapter's; others = open vocabulary).
        precision: ``auto`` (bf16 on CUDA), ``bf16``, ``fp16`` or ``fp32``.

    Returns:
        Accuracy in percent (float in [0, 100]).
    """
    rows = torch.arange(len(test)) if rows is None else rows
    labels = test.labels[rows] if labels is None else labels
    if len(rows) == 0:
        return float("nan")
    names = list(class_names) if class_names is not None else None
    device = predictor.backbone.device
    if _uses_frozen_images(adapter):
        feats = test.frozen_features(batch_size, precision)[rows.to(device)]  # (M, D)
        scale = predictor.backbone.model.logit_scale.exp().float()
        pred = (scale * feats @ _class_features(predictor.backbone, adapter, names).t()).argmax(dim=-1).cpu()
    else:
        preds = []
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            with autocast(device, precision):
                z = predictor.logits(adapter, test.batch(idx), names)  # (b, C)
            preds.append(z.argmax(dim=-1).cpu())
        pred = torch.cat(preds)
    return 100.0 * int((pred == labels.cpu()).sum()) / len(labels)


__all__ = ["CachedTestSplit", "accuracy", "autocast"]
