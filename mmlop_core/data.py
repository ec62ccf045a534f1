"""Few-shot data: per-class sampling, class-folder datasets and training augmentation."""
from __future__ import annotations

import math
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


class BatchAugment:
    """Random-resized-crop + horizontal flip of the original images, then normalisation.

    docs/METHOD.md section 5's 224 px random-resized-crop + flip, as the reference trainers (CoOp,
    IVLP/PromptSRC through Dassl) build it: torchvision's ``RandomResizedCrop(image_size,
    scale=(crop_scale_min, 1), ratio=(3/4, 4/3), interpolation=bicubic)`` then
    ``RandomHorizontalFlip()`` on each *original* PIL image, so a crop may hold content outside
    the centre square that evaluation sees (issue 12 E.20: crops used to be cut from the
    already resized, centre-cropped image). The crop parameters come from torchvision's own
    sampler, so per row: area fraction, log-uniform aspect ratio, position (10 tries, then a
    centre crop) and a flip.

    Images whose shorter side exceeds ``ceil(image_size / sqrt(crop_scale_min * 3/4))`` pixels
    are shrunk (bicubic, aspect kept) to that side once per job: even the smallest crop then
    still has at least `image_size` pixels a side, so only resolution the output could not show
    is dropped, never field of view, and a crop of a large photo resamples at most that many
    pixels (a 4000x3000 photo is kept at 1220x915 for ``image_size=224``, ``crop_scale_min=0.08``).

    With ``crop_small=False``, photos whose shorter side is below `image_size` (thumbnails,
    28 px Fashion-MNIST photos on a 64 px backbone) are not cropped: they get the eval view and
    the random flip only, where the reference crop of 8% of the area would blow a few source
    pixels up to the whole input. The default (True) crops every photo, as the reference
    trainers do; docs/TINY_EVAL.md has what each gives on the tiny backbone.

    Without `augment` the output equals the backbone's eval preprocessing (resize shorter side
    to `image_size`, bicubic; centre crop), computed once per job.

    Args:
        images: RGB PIL images, any size.
        preprocess: the backbone's eval transform (its ``Normalize`` mean/std are reused).
        image_size: output side in pixels.
        crop_scale_min: smallest crop area fraction, in (0, 1].
        augment: False = no crop/flip.
        crop_small: False = photos whose shorter side is below `image_size` are only flipped.
        device: where the returned batches live (the eval-view uint8 images (N, 3, S, S) are
            kept there too).
    """

    RATIO = (3 / 4, 4 / 3)

    def __init__(self, images: Sequence[Image.Image], preprocess, image_size: int, crop_scale_min: float,
                 augment: bool, device: torch.device, crop_small: bool = True) -> None:
        self.scale_min, self.augment, self.size, self.device = crop_scale_min, augment, image_size, device
        norm = next((t for t in getattr(preprocess, "transforms", []) if isinstance(t, transforms.Normalize)), None)
        mean = norm.mean if norm is not None else (0.0, 0.0, 0.0)
        std = norm.std if norm is not None else (1.0, 1.0, 1.0)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        eval_view = transforms.Compose([
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size), transforms.PILToTensor()])
        if augment:
            cap = math.ceil(image_size / math.sqrt(crop_scale_min * min(self.RATIO[0], 1 / self.RATIO[1])))
            # per photo: a source to crop (PIL) or, for a small photo, its eval view to flip (uint8 (3, S, S))
            self.sources = [eval_view(im) if min(im.size) < image_size and not crop_small else _shrink(im, cap)
                            for im in images]
        else:
            self.images = torch.stack([eval_view(im) for im in images]).to(device)  # (N, 3, S, S) uint8

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """Augmented, normalised batch for the rows `idx` (LongTensor (B,)): FloatTensor (B, 3, S, S).

        Draws from the global torch RNG (seeded by the trainer): the same seed gives the same crops.
        """
        if self.augment:
            x = torch.stack([self._crop(self.sources[int(i)]) for i in idx]).to(self.device)  # (B, 3, S, S) uint8
        else:
            x = self.images[idx.to(self.images.device)]
        return (x.float().div_(255) - self.mean) / self.std

    def _crop(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """One random-resized-crop + flip of `image` (a small photo's eval view: the flip only): ByteTensor (3, S, S)."""
        if isinstance(image, torch.Tensor):
            return image.flip(-1) if torch.rand(1) < 0.5 else image
        top, left, height, width = transforms.RandomResizedCrop.get_params(image, [self.scale_min, 1.0],
                                                                           list(self.RATIO))
        out = transforms.functional.resized_crop(image, top, left, height, width, [self.size, self.size],
                                                 interpolation=transforms.InterpolationMode.BICUBIC)
        if torch.rand(1) < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return transforms.functional.pil_to_tensor(out)


def _shrink(image: Image.Image, max_short_side: int) -> Image.Image:
    """`image` with its shorter side at most `max_short_side` pixels (bicubic, aspect ratio kept)."""
    short = min(image.size)
    if short <= max_short_side:
        return image
    factor = max_short_side / short
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC)
