"""Few-shot data: per-class sampling, class-folder datasets and training augmentation."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from .errors import DataError
from .images import open_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def sample_few_shot(labels: Sequence[int], shots: int | None, seed: int) -> list[int]:
    """Indices of at most `shots` items per class, drawn without replacement with `seed`.

    Same `labels`, `shots` and `seed` give the same indices (CoOp's per-seed few-shot split).
    Classes with fewer than `shots` items keep all of theirs. Returned sorted ascending.

    Args:
        labels: class index per item.
        shots: items per class; None keeps everything.
        seed: seed of the torch generator used.
    """
    if shots is None:
        return list(range(len(labels)))
    gen = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    chosen: list[int] = []
    for y in sorted(by_class):
        idx = by_class[y]
        perm = torch.randperm(len(idx), generator=gen)[:shots].tolist()
        chosen.extend(idx[j] for j in perm)
    return sorted(chosen)


def load_class_folders(root: str | Path) -> tuple[list[Image.Image], list[int], list[str]]:
    """Read a folder-per-class dataset: ``root/<class name>/<image>``.

    Class names are the folder names, sorted; hidden entries are ignored.

    Returns:
        (images as RGB PIL images, labels as class indices, class names).

    Raises:
        DataError: `root` is missing, has no class folders, or a class folder has no image.
        ImageError: an image file cannot be decoded (message names the file).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {str(root)!r} does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"data directory {str(root)!r} has no class folders (expected ROOT/<class name>/<images>)")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder {str(root / name)!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            images.append(open_image(f.read_bytes(), name=str(f)))
            labels.append(label)
    return images, labels, classes


class BatchAugment:
    """Random-resized-crop + horizontal flip of a whole batch in one ``grid_sample`` (no per-image loop).

    The training images are decoded, resized (shorter side to `image_size`, bicubic) and
    center-cropped once per job and kept as uint8 on the device; each step samples, per row, an
    area fraction in [crop_scale_min, 1], an aspect ratio in [3/4, 4/3] (log-uniform), a position
    and a flip, builds the affine grids and resamples bilinearly (MMLOP.md section 5's
    random-resized-crop + flip, after torchvision's ``RandomResizedCrop`` which samples the same
    way but retries out-of-bounds crops; here they are clamped to the image). Without `augment`
    the output equals the backbone's eval preprocessing.

    Args:
        images: RGB PIL images.
        preprocess: the backbone's eval transform (its ``Normalize`` mean/std are reused).
        image_size: output side in pixels.
        crop_scale_min: smallest crop area fraction.
        augment: False = no crop/flip.
        device: where the uint8 images (N, 3, S, S) live.
    """

    RATIO = (3 / 4, 4 / 3)

    def __init__(self, images: Sequence[Image.Image], preprocess, image_size: int, crop_scale_min: float,
                 augment: bool, device: torch.device) -> None:
        base = transforms.Compose([
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size), transforms.PILToTensor()])
        self.images = torch.stack([base(im) for im in images]).to(device)  # (N, 3, S, S) uint8
        norm = next((t for t in getattr(preprocess, "transforms", []) if isinstance(t, transforms.Normalize)), None)
        mean = norm.mean if norm is not None else (0.0, 0.0, 0.0)
        std = norm.std if norm is not None else (1.0, 1.0, 1.0)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.scale_min, self.augment, self.size = crop_scale_min, augment, image_size

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """Augmented, normalised batch for the rows `idx` (LongTensor (B,)): FloatTensor (B, 3, S, S).

        Draws from the global torch RNG (seeded by the trainer).
        """
        x = self.images[idx.to(self.images.device)].float().div_(255)  # (B, 3, S, S)
        if self.augment:
            b = x.shape[0]
            area = torch.empty(b).uniform_(self.scale_min, 1.0)
            log_r = torch.empty(b).uniform_(math.log(self.RATIO[0]), math.log(self.RATIO[1]))
            w = (area * log_r.exp()).sqrt().clamp(max=1.0)  # crop width / image width
            h = (area / log_r.exp()).sqrt().clamp(max=1.0)
            cx = (torch.rand(b) * 2 - 1) * (1 - w)  # crop centre in [-1, 1] coordinates
            cy = (torch.rand(b) * 2 - 1) * (1 - h)
            flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0)
            theta = torch.zeros(b, 2, 3)
            theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
            theta[:, 1, 1], theta[:, 1, 2] = h, cy
            grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return (x - self.mean) / self.std
