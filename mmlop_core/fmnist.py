"""Fashion-MNIST as the offline evidence data: reading, fixed photo domains and captions.

Source: Debian's ``dataset-fashion-mnist`` (Zalando's product photos, 28x28 grayscale, IDX files
in ``/usr/share/datasets/fashion-mnist``): 60,000 train and 10,000 test photos of 10 classes.
The tiny backbone is pretrained on the train split only (:mod:`mmlop_core.pretrain`); the test
split, and fixed transforms of it, are kept for evaluation (``mmlop eval prepare-fmnist``).

Domains are deterministic photo transforms (a seeded one for ``jitter``), the small counterparts
of ImageNet-Sketch/-R/-V2: each has captions that describe it, so that CLIP-style templates such
as "a sketch of a {}." mean something to the pretrained text tower.
"""
from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .errors import DataError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")

# Label order of the IDX files (Zalando's README), written as CLIP-style class names.
CLASS_NAMES: tuple[str, ...] = ("t-shirt", "trouser", "pullover", "dress", "coat",
                                "sandal", "shirt", "sneaker", "bag", "ankle boot")

# Words a web caption would more often use than the class name: group names shared by several
# classes (every upper-body garment is a "top", every shoe is "footwear"), so that the captions
# supervise the fine classes less often than the groups, as in CLIP's web data.
GENERIC_NAMES: dict[str, tuple[str, ...]] = {
    "t-shirt": ("top", "piece of clothing", "garment"),
    "trouser": ("piece of clothing", "garment", "bottoms"),
    "pullover": ("top", "piece of clothing", "garment"),
    "dress": ("piece of clothing", "garment", "outfit"),
    "coat": ("top", "piece of clothing", "garment"),
    "sandal": ("shoe", "footwear", "pair of shoes"),
    "shirt": ("top", "piece of clothing", "garment"),
    "sneaker": ("shoe", "footwear", "pair of shoes"),
    "bag": ("accessory", "fashion accessory", "item"),
    "ankle boot": ("shoe", "footwear", "pair of shoes"),
}

# Class-specific words a product caption uses instead of the dataset's label word (none holds
# another class's name), so that the captions teach the classes apart more often through these
# words than through the label words that zero-shot prompts use.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("tee", "tee shirt", "short-sleeved top", "graphic tee"),
    "trouser": ("pants", "jeans", "slacks", "leggings"),
    "pullover": ("sweater", "jumper", "knit sweater", "sweatshirt"),
    "dress": ("gown", "frock", "sundress", "evening gown"),
    "coat": ("jacket", "parka", "overcoat", "winter jacket"),
    "sandal": ("flip-flop", "slide", "beach shoe", "open-toe shoe"),
    "shirt": ("blouse", "button-down", "flannel", "collared top"),
    "sneaker": ("trainer", "running shoe", "tennis shoe", "sports shoe"),
    "bag": ("handbag", "purse", "tote", "clutch"),
    "ankle boot": ("bootie", "chelsea bootie", "heeled bootie", "short bootie"),
}

# Loose usage of label words on the web: a caption may call a photo by a neighbouring class's label
# word ("shirt" for a t-shirt, "sneaker" for a sandal). Zero-shot prompts, which use the label
# words, inherit this confusion; the synonyms above stay class-specific, so the image features do
# not (a CLIP-like gap that few-shot adaptation can close).
LOOSE_LABELS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("shirt",), "trouser": ("dress",), "pullover": ("coat", "shirt"), "dress": ("coat",),
    "coat": ("pullover",), "sandal": ("sneaker",), "shirt": ("t-shirt", "pullover"),
    "sneaker": ("sandal", "ankle boot"),
    "bag": ("coat",), "ankle boot": ("sneaker",),
}

_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzip): uint8 array of the shape its header gives."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"Fashion-MNIST file {str(path)!r} is missing; install Debian's dataset-fashion-mnist "
                        f"(apt-get install dataset-fashion-mnist) or pass its folder") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"Fashion-MNIST file {str(path)!r} is not a readable gzip IDX file ({exc})") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{str(path)!r} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"{str(path)!r} holds {len(data)} bytes, its header promises {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_split(split: str, root: str | Path = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of the ``"train"`` or ``"test"`` split.

    Raises:
        DataError: unknown split, or a missing or malformed file (the message names it).
    """
    if split not in _FILES:
        raise DataError(f"split={split!r} is not a Fashion-MNIST split; use 'train' or 'test'")
    root = Path(root)
    images = _read_idx(root / _FILES[split][0])
    labels = _read_idx(root / _FILES[split][1]).astype(np.int64)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DataError(f"Fashion-MNIST {split} images {images.shape} and labels {labels.shape} do not match")
    return images, labels


# ---- domains ----------------------------------------------------------------------------------

def _sketch(im: Image.Image) -> Image.Image:
    """Dark outlines on white paper: inverted edge map, contrast stretched."""
    return ImageOps.invert(ImageOps.autocontrast(im.filter(ImageFilter.FIND_EDGES)))


def _jitter(im: Image.Image, rng: random.Random) -> Image.Image:
    """A re-shot photo (ImageNet-V2's counterpart): shifted up to 3 px and scaled 0.8-1.0."""
    scale = rng.uniform(0.8, 1.0)
    dx, dy = rng.randint(-3, 3), rng.randint(-3, 3)
    size = im.size[0]
    c = (size - 1) / 2
    # inverse affine map: output (x, y) samples input ((x - c - dx) / s + c, (y - c - dy) / s + c)
    coeffs = (1 / scale, 0, c - (c + dx) / scale, 0, 1 / scale, c - (c + dy) / scale)
    return im.transform(im.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)


DOMAIN_TRANSFORMS = {
    "photo": lambda im, rng: im,
    "negative": lambda im, rng: ImageOps.invert(im),
    "sketch": lambda im, rng: _sketch(im),
    "blur": lambda im, rng: im.filter(ImageFilter.GaussianBlur(1.2)),
    "rotated": lambda im, rng: im.rotate(90),
    "lowcontrast": lambda im, rng: im.point(lambda v: 96 + v // 4),
    "jitter": _jitter,
}

# Captions per domain; '{}' is the class name. Plain photos use CLIP/CoOp templates.
DOMAIN_CAPTIONS: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {}.", "a photo of the {}.", "itap of a {}.", "a good photo of a {}.",
              "a close-up photo of a {}.", "a photo of my {}.", "a cropped photo of the {}.",
              "a photo of one {}.", "a {}.", "a black and white photo of the {}.", "a product photo of a {}.",
              "a photo of a nice {}.", "a photo of the clean {}.", "a bright photo of a {}."),
    "negative": ("a negative photo of a {}.", "an inverted photo of the {}.", "a photo negative of a {}.",
                 "a negative of the {}."),
    "sketch": ("a sketch of a {}.", "a sketch of the {}.", "a drawing of a {}.", "a doodle of a {}.",
               "a line drawing of the {}."),
    "blur": ("a blurry photo of a {}.", "a blurry photo of the {}.", "a low resolution photo of a {}.",
             "an out of focus photo of the {}."),
    "rotated": ("a rotated photo of a {}.", "a photo of a {} on its side.", "a sideways photo of the {}."),
    "lowcontrast": ("a low contrast photo of a {}.", "a dark photo of the {}.", "a photo of the hard to see {}.",
                    "a faded photo of a {}."),
    "jitter": ("a photo of a {}.", "a cropped photo of a {}.", "a small photo of the {}."),
}

# Domains the pretraining recipe draws from, with their share of the photos.
PRETRAIN_DOMAINS: dict[str, float] = {"photo": 0.5, "negative": 0.1, "sketch": 0.1, "blur": 0.1,
                                      "rotated": 0.1, "lowcontrast": 0.1}


def apply_domain(image: np.ndarray | Image.Image, domain: str, rng: random.Random | None = None) -> Image.Image:
    """One photo in `domain`: a grayscale PIL image of the same size.

    Args:
        image: uint8 (H, W) array or PIL image (converted to grayscale ``L``).
        domain: a key of :data:`DOMAIN_TRANSFORMS`.
        rng: source of the ``jitter`` domain's draws (a fixed seed if None).

    Raises:
        DataError: unknown domain.
    """
    if domain not in DOMAIN_TRANSFORMS:
        raise DataError(f"domain={domain!r} is unknown; use one of {', '.join(DOMAIN_TRANSFORMS)}")
    im = Image.fromarray(image, mode="L") if isinstance(image, np.ndarray) else image.convert("L")
    return DOMAIN_TRANSFORMS[domain](im, rng or random.Random(0))


__all__ = ["CLASS_NAMES", "DEFAULT_DIR", "DOMAIN_CAPTIONS", "DOMAIN_TRANSFORMS", "GENERIC_NAMES", "LOOSE_LABELS",
           "PRETRAIN_DOMAINS", "SYNONYMS",
           "apply_domain", "read_split"]
