"""Few-shot data: per-class sampling, class-folder datasets and training augmentation."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
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


def train_transform(image_size: int, preprocess, crop_scale_min: float, augment: bool):
    """Training transform: random-resized-crop to `image_size` px + horizontal flip, then the
    backbone's own normalisation (MMLOP.md section 5). Without `augment`: the eval transform.

    Returns:
        Callable PIL image -> FloatTensor (3, image_size, image_size).
    """
    if not augment:
        return preprocess
    normalize = next((t for t in getattr(preprocess, "transforms", []) if isinstance(t, transforms.Normalize)), None)
    steps = [
        transforms.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0),
                                     interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ]
    if normalize is not None:
        steps.append(normalize)
    return transforms.Compose(steps)
