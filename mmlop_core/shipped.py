"""Backbone weights shipped inside the library (work offline, in wheels too).

Each entry maps an (open_clip model name, pretrained tag) pair to a file in
``mmlop_core/weights/`` and the sha256 of that file, which is verified every time it is loaded.
Today there is one: ``("mmlop-tiny", "fmnist")``, the tiny CLIP pretrained here on Fashion-MNIST's
train split by ``mmlop pretrain-tiny`` (recipe and figures: docs/MODEL_CARD_TINY.md).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import BackboneUnavailableError

WEIGHTS_DIR = Path(__file__).with_name("weights")


@dataclass(frozen=True)
class ShippedWeights:
    """One shipped weights file: `filename` in :data:`WEIGHTS_DIR` and its sha256 hex digest."""

    filename: str
    sha256: str


SHIPPED: dict[tuple[str, str], ShippedWeights] = {
    ("mmlop-tiny", "fmnist"): ShippedWeights("mmlop-tiny-fmnist.safetensors", "2bed94eef5e41348a1660bef84e7da82e3ada30621b8dc194df0137d2b6b727c"),
}


def shipped_tags(name: str) -> list[str]:
    """Pretrained tags shipped with the library for open_clip model `name` (may be empty)."""
    return [tag for (model, tag) in SHIPPED if model == name]


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_path(name: str, tag: str, weights_dir: Path = WEIGHTS_DIR) -> Path | None:
    """Path of the shipped weights for (`name`, `tag`) after checking their sha256; None if not shipped.

    Raises:
        BackboneUnavailableError: the file is missing from the installation, or its sha256 differs
            from the recorded one (the message gives both digests).
    """
    entry = SHIPPED.get((name, tag))
    if entry is None:
        return None
    path = weights_dir / entry.filename
    if not path.is_file():
        raise BackboneUnavailableError(
            f"shipped weights {name}/{tag} are missing from this installation ({entry.filename}); reinstall mmlop")
    actual = file_sha256(path)
    if actual != entry.sha256:
        raise BackboneUnavailableError(
            f"shipped weights {name}/{tag} fail their integrity check: sha256 {actual} but {entry.sha256} is "
            f"recorded; the file {entry.filename} is corrupt or was replaced; reinstall mmlop")
    return path
