"""Tiny datasets in CoOp's folder layout, built from the real Fashion-MNIST fixture photos.

``coop_root`` holds EuroSAT (10 classes, split JSON), DTD (7 classes: ceil(7/2) = 4 base),
ImageNet in its own layout (6 classes) and ImageNet-V2/-Sketch/-A/-R; FGVCAircraft is built
by its reader test. Images are copied (not linked), so tests may delete them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fashion_mnist"
CLASSES = sorted(p.name for p in (FIXTURES / "train").iterdir() if p.is_dir())  # 10 names, sorted
TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = 6, 2, 5


@pytest.fixture(autouse=True)
def _one_thread():
    """Other engineers share the 2 CPU cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _files(split: str, cls: str) -> list[Path]:
    return sorted((FIXTURES / split / cls).glob("*.png"))


def folder_name(cls: str) -> str:
    """CoOp-style folder / class name with underscores (the readers turn them into spaces)."""
    return cls.replace(" ", "_").replace("-", "_").title()


def make_split_json_dataset(root: Path, folder: str, image_dir: str, split_file: str, classes: list[str]) -> Path:
    """``root/folder/image_dir/<Class>/*.png`` + ``root/folder/split_file`` in CoOp's JSON format."""
    base = root / folder
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, cls in enumerate(classes):
        name = folder_name(cls)
        (base / image_dir / name).mkdir(parents=True, exist_ok=True)
        train_files = _files("train", cls)
        parts = {"train": train_files[:TRAIN_PER_CLASS],
                 "val": train_files[TRAIN_PER_CLASS:TRAIN_PER_CLASS + VAL_PER_CLASS],
                 "test": _files("test", cls)[:TEST_PER_CLASS]}
        for part, files in parts.items():
            for f in files:
                rel = f"{name}/{part}_{f.name}"
                shutil.copyfile(f, base / image_dir / rel)
                split[part].append([rel, label, name])
    (base / split_file).write_text(json.dumps(split))
    return base


def _copy_class(dst: Path, cls: str, split: str, n: int, start: int = 0) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in _files(split, cls)[start:start + n]:
        shutil.copyfile(f, dst / f.name)


def make_imagenet(root: Path, classes: list[str]) -> None:
    """ImageNet's own layout (classnames.txt + images/train|val/<wnid>/) and the four variants."""
    wnids = [f"n{i:08d}" for i in range(len(classes))]
    listing = "".join(f"{w} {c}\n" for w, c in zip(wnids, classes))
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet" / "classnames.txt").write_text(listing)
    for w, c in zip(wnids, classes):
        _copy_class(root / "imagenet" / "images" / "train" / w, c, "train", TRAIN_PER_CLASS)
        _copy_class(root / "imagenet" / "images" / "val" / w, c, "test", TEST_PER_CLASS)
    # V2: folders 0..C-1 in classnames.txt order; Sketch: all wnids; A and R: a subset + README.txt.
    for folder, sub in (("imagenetv2", "imagenetv2-matched-frequency-format-val"), ("imagenet-sketch", "images"),
                        ("imagenet-adversarial", "imagenet-a"), ("imagenet-rendition", "imagenet-r")):
        (root / folder / sub).mkdir(parents=True)
        (root / folder / "classnames.txt").write_text(listing)
        subset = list(zip(wnids, classes)) if folder in ("imagenetv2", "imagenet-sketch") else list(zip(wnids, classes))[1::2]
        for i, (w, c) in enumerate(subset):
            name = str(i) if folder == "imagenetv2" else w
            _copy_class(root / folder / sub / name, c, "test", 3, start=TEST_PER_CLASS)
        if folder in ("imagenet-adversarial", "imagenet-rendition"):
            (root / folder / sub / "README.txt").write_text("readme")  # CoOp ignores it


@pytest.fixture(scope="session")
def coop_root_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coop_data")
    make_split_json_dataset(root, "eurosat", "2750", "split_zhou_EuroSAT.json", CLASSES)
    make_split_json_dataset(root, "dtd", "images", "split_zhou_DescribableTextures.json", CLASSES[:7])
    make_imagenet(root, CLASSES[:6])
    return root


@pytest.fixture
def coop_root(coop_root_template: Path, tmp_path: Path) -> Path:
    """A fresh copy per test (tests may delete files)."""
    dst = tmp_path / "data"
    shutil.copytree(coop_root_template, dst)
    return dst


TINY = ["--backbone", "mmlop-tiny", "--pretrained", "none", "--device", "cpu", "--quiet",
        "--eval-batch-size", "16"]
