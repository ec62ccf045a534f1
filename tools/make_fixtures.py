"""Derive the small Fashion-MNIST photo fixtures committed under tests/fixtures/.

Source: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), the
Zalando product photos (28x28 grayscale). Writes PNGs in a folder-per-class layout:
``train/<class>/NNN.png`` (first 32 training images of each class) and
``test/<class>/NNN.png`` (first 50 test images of each class, 500 in all).

Usage: python tools/make_fixtures.py [--src DIR] [--out DIR]
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _write_split(images: np.ndarray, labels: np.ndarray, per_class: int, out: Path) -> None:
    for label, name in enumerate(CLASS_NAMES):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, idx in enumerate(np.flatnonzero(labels == label)[:per_class]):
            Image.fromarray(images[idx], mode="L").save(folder / f"{i:03d}.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/fashion_mnist")
    args = parser.parse_args()
    _write_split(_read_idx(args.src / "train-images-idx3-ubyte.gz"),
                 _read_idx(args.src / "train-labels-idx1-ubyte.gz"), 32, args.out / "train")
    _write_split(_read_idx(args.src / "t10k-images-idx3-ubyte.gz"),
                 _read_idx(args.src / "t10k-labels-idx1-ubyte.gz"), 50, args.out / "test")


if __name__ == "__main__":
    main()
