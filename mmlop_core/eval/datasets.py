"""Readers of the 11 base-to-novel datasets and the 4 ImageNet variants in CoOp's folder layout.

Follows CoOp (Zhou et al., KaiyangZhou/CoOp, ``datasets/*.py``): each dataset lives in
``DATA_ROOT/<folder>/``; ten of them are read through CoOp's split file
``split_zhou_<Name>.json`` (``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``,
paths relative to the dataset's image folder, CoOp ``oxford_pets.py`` ``read_split``);
FGVCAircraft through its own ``variants.txt`` + ``images_variant_<split>.txt``
(``fgvc_aircraft.py``); ImageNet through ``classnames.txt`` + ``images/{train,val}/<wnid>/``
with ``val`` as the test split (``imagenet.py``); ImageNet-V2/-Sketch/-A/-R are test-only
(``imagenetv2.py``, ``imagenet_sketch.py``, ``imagenet_a.py``, ``imagenet_r.py``).

Class names have CoOp's underscores replaced by spaces (CoOp's ``PromptLearner`` does the
same before tokenising). Templates are docs/METHOD.md section 7's. Pure Python + PIL: images are
opened only when needed (:func:`open_sample`), so a dataset object is a list of paths.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from ..errors import DataError
from ..images import open_image

log = logging.getLogger(__name__)


class Sample(NamedTuple):
    """One labelled image: absolute `path` and class index `label` in [0, C)."""

    path: str
    label: int


@dataclass
class Dataset:
    """A dataset's class names, prompt template and splits (lists of :class:`Sample`).

    Attributes:
        key: registry key, e.g. ``"eurosat"``.
        title: CoOp's name, e.g. ``"EuroSAT"``.
        classnames: C names, index = label (underscores replaced by spaces).
        template: dataset prompt template with one ``{}`` (docs/METHOD.md section 7).
        train / val / test: samples; test-only datasets have empty train and val.
        root: the dataset folder (``DATA_ROOT/<folder>``).
    """

    key: str
    title: str
    classnames: list[str]
    template: str
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    root: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives below the data root and how to read it (CoOp ``datasets/*.py``)."""

    key: str  # registry key used on the command line
    title: str  # CoOp's class / split-file name
    folder: str  # DATA_ROOT/<folder>
    image_dir: str  # images below the folder ("" = the folder itself)
    kind: str  # "split_json" | "aircraft" | "imagenet" | "imagenet_variant"
    template: str = "a photo of a {}."  # docs/METHOD.md section 7
    split_file: str = ""  # split_zhou_<Name>.json for kind "split_json"
    numbered_folders: bool = False  # ImageNet-V2: class folders are named 0..999 in classnames.txt order


_PHOTO = "a photo of a {}."
# Registry key (= folder) -> CoOp-style title of the Fashion-MNIST datasets; targets are test-only.
FMNIST_DATASETS: dict[str, str] = {"fmnist": "FashionMNIST", "fmnist-sketch": "FashionMNISTSketch",
                                   "fmnist-negative": "FashionMNISTNegative", "fmnist-blur": "FashionMNISTBlur",
                                   "fmnist-v2": "FashionMNISTV2"}
FMNIST_TARGETS: tuple[str, ...] = ("fmnist-sketch", "fmnist-negative", "fmnist-blur", "fmnist-v2")
SPECS: dict[str, DatasetSpec] = {s.key: s for s in (
    DatasetSpec("imagenet", "ImageNet", "imagenet", "images", "imagenet"),
    DatasetSpec("caltech101", "Caltech101", "caltech-101", "101_ObjectCategories", "split_json",
                split_file="split_zhou_Caltech101.json"),
    DatasetSpec("oxford_pets", "OxfordPets", "oxford_pets", "images", "split_json",
                "a photo of a {}, a type of pet.", "split_zhou_OxfordPets.json"),
    DatasetSpec("stanford_cars", "StanfordCars", "stanford_cars", "", "split_json",
                split_file="split_zhou_StanfordCars.json"),
    DatasetSpec("oxford_flowers", "OxfordFlowers", "oxford_flowers", "jpg", "split_json",
                "a photo of a {}, a type of flower.", "split_zhou_OxfordFlowers.json"),
    DatasetSpec("food101", "Food101", "food-101", "images", "split_json",
                "a photo of {}, a type of food.", "split_zhou_Food101.json"),
    DatasetSpec("fgvc_aircraft", "FGVCAircraft", "fgvc_aircraft", "images", "aircraft",
                "a photo of a {}, a type of aircraft."),
    DatasetSpec("sun397", "SUN397", "sun397", "SUN397", "split_json", split_file="split_zhou_SUN397.json"),
    DatasetSpec("dtd", "DescribableTextures", "dtd", "images", "split_json", "{} texture.",
                "split_zhou_DescribableTextures.json"),
    DatasetSpec("eurosat", "EuroSAT", "eurosat", "2750", "split_json", "a centered satellite photo of {}.",
                "split_zhou_EuroSAT.json"),
    DatasetSpec("ucf101", "UCF101", "ucf101", "UCF-101-midframes", "split_json",
                "a photo of a person doing {}.", "split_zhou_UCF101.json"),
    DatasetSpec("imagenetv2", "ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val",
                "imagenet_variant", numbered_folders=True),
    DatasetSpec("imagenet_sketch", "ImageNetSketch", "imagenet-sketch", "images", "imagenet_variant"),
    DatasetSpec("imagenet_a", "ImageNetA", "imagenet-adversarial", "imagenet-a", "imagenet_variant"),
    DatasetSpec("imagenet_r", "ImageNetR", "imagenet-rendition", "imagenet-r", "imagenet_variant"),
    # The built-in mini benchmark (``mmlop eval prepare-fmnist``): Fashion-MNIST and fixed
    # transforms of its test photos, the small counterparts of ImageNet-Sketch/-R/-V2.
    *(DatasetSpec(key, title, key, "images", "split_json", split_file=f"split_zhou_{title}.json")
      for key, title in FMNIST_DATASETS.items()),
)}

BASE_TO_NOVEL_DATASETS: tuple[str, ...] = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
IMAGENET_VARIANTS: tuple[str, ...] = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")

# Other spellings accepted on the command line (CoOp class names, common short names).
_ALIASES = {
    "caltech": "caltech101", "caltech-101": "caltech101", "pets": "oxford_pets", "oxfordpets": "oxford_pets",
    "cars": "stanford_cars", "stanfordcars": "stanford_cars", "flowers": "oxford_flowers",
    "flowers102": "oxford_flowers", "oxfordflowers": "oxford_flowers", "food": "food101", "food-101": "food101",
    "aircraft": "fgvc_aircraft", "fgvcaircraft": "fgvc_aircraft", "sun": "sun397",
    "describabletextures": "dtd", "ucf": "ucf101", "imagenet-v2": "imagenetv2", "imagenet_v2": "imagenetv2",
    "imagenet-sketch": "imagenet_sketch", "imagenetsketch": "imagenet_sketch", "imagenet-a": "imagenet_a",
    "imageneta": "imagenet_a", "imagenet-r": "imagenet_r", "imagenetr": "imagenet_r",
    "fashion-mnist": "fmnist", "fashionmnist": "fmnist", "fashion_mnist": "fmnist",
    **{k.replace("-", "_"): k for k in FMNIST_DATASETS},
}
_IGNORED_FOLDERS = {"README.txt"}  # CoOp imagenet_a.py / imagenet_r.py TO_BE_IGNORED


def resolve_dataset_name(name: str) -> str:
    """Registry key of `name` (case-insensitive; CoOp names and short aliases accepted).

    Raises:
        DataError: unknown dataset name (the message lists the known ones).
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SPECS:
        raise DataError(f"dataset {name!r} is unknown; use one of {', '.join(SPECS)}")
    return key


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} {str(path)!r} is missing; see docs/REPRODUCE.md for the data layout")
    return path


def _clean(name: str) -> str:
    return name.replace("_", " ").strip()


def _classnames_from_items(items: Sequence[tuple[int, str]], source: Path) -> list[str]:
    names: dict[int, str] = {}
    for label, name in items:
        names.setdefault(label, name)
    if not names:
        raise DataError(f"{str(source)!r} lists no images")
    expected = list(range(len(names)))
    if sorted(names) != expected:
        missing = sorted(set(range(max(names) + 1)) - set(names))
        raise DataError(f"{str(source)!r}: labels must be 0..C-1 without gaps; label {missing[0]} has no image")
    return [_clean(names[i]) for i in expected]


def _read_split_json(spec: DatasetSpec, folder: Path) -> Dataset:
    """CoOp ``OxfordPets.read_split``: paths joined to the image folder, labels as given."""
    split_path = _require(folder / spec.split_file, "split file")
    image_dir = _require(folder / spec.image_dir if spec.image_dir else folder, "image folder")
    try:
        data = json.loads(split_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"split file {str(split_path)!r} is not valid JSON ({exc})") from exc
    splits: dict[str, list[Sample]] = {}
    named: list[tuple[int, str]] = []
    for part in ("train", "val", "test"):
        entries = data.get(part) if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise DataError(f"split file {str(split_path)!r} has no {part!r} list of [path, label, classname]")
        samples = []
        for entry in entries:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str)
                    and isinstance(entry[1], int) and isinstance(entry[2], str)):
                raise DataError(f"split file {str(split_path)!r}: {part} entry {entry!r} is not [path, label, classname]")
            samples.append(Sample(str(image_dir / entry[0]), entry[1]))
            named.append((entry[1], entry[2]))
        splits[part] = samples
    return Dataset(spec.key, spec.title, _classnames_from_items(named, split_path), spec.template,
                   splits["train"], splits["val"], splits["test"], str(folder))


def _read_aircraft(spec: DatasetSpec, folder: Path) -> Dataset:
    """CoOp ``fgvc_aircraft.py``: class order of ``variants.txt``; ``<image id> <variant>`` lines."""
    variants = _require(folder / "variants.txt", "class list")
    image_dir = _require(folder / spec.image_dir, "image folder")
    classnames = [line.strip() for line in variants.read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(classnames)}
    splits = {}
    for part in ("train", "val", "test"):
        path = _require(folder / f"images_variant_{part}.txt", "split file")
        samples = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            image_id, _, variant = line.strip().partition(" ")
            if variant not in index:
                raise DataError(f"{str(path)!r} line {n}: variant {variant!r} is not in variants.txt")
            samples.append(Sample(str(image_dir / f"{image_id}.jpg"), index[variant]))
        splits[part] = samples
    return Dataset(spec.key, spec.title, [_clean(c) for c in classnames], spec.template,
                   splits["train"], splits["val"], splits["test"], str(folder))


def read_imagenet_classnames(path: Path) -> dict[str, str]:
    """CoOp ``ImageNet.read_classnames``: ``<folder> <class name>`` per line, order kept.

    Raises:
        DataError: the file is missing or a line has no class name.
    """
    _require(path, "class list")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        folder, _, name = line.strip().partition(" ")
        if not name.strip():
            raise DataError(f"{str(path)!r} line {n}: expected '<folder> <class name>'")
        out[folder] = name.strip()
    return out


def _list_images(directory: Path) -> list[str]:
    return sorted(str(directory / f) for f in os.listdir(directory) if not f.startswith("."))


def _read_class_dirs(split_dir: Path, folders: list[str], classnames: dict[str, str],
                     list_file: Path) -> tuple[list[Sample], list[str]]:
    samples, names = [], []
    for label, folder in enumerate(folders):
        if folder not in classnames:
            raise DataError(f"class folder {str(split_dir / folder)!r} is not listed in {str(list_file)!r}")
        names.append(classnames[folder])
        samples.extend(Sample(p, label) for p in _list_images(split_dir / folder))
    return samples, names


def _subfolders(directory: Path) -> list[str]:
    return sorted(f.name for f in os.scandir(directory) if f.is_dir() and f.name not in _IGNORED_FOLDERS
                  and not f.name.startswith("."))


def _read_imagenet(spec: DatasetSpec, folder: Path) -> Dataset:
    """CoOp ``imagenet.py``: labels = sorted wnid folders; ``images/val`` is the test split."""
    list_file = folder / "classnames.txt"
    classnames = read_imagenet_classnames(list_file)
    image_dir = _require(folder / spec.image_dir, "image folder")
    train_dir = _require(image_dir / "train", "image folder")
    val_dir = _require(image_dir / "val", "image folder")
    train, names = _read_class_dirs(train_dir, _subfolders(train_dir), classnames, list_file)
    test_folders = _subfolders(val_dir)
    if len(test_folders) != len(names):
        raise DataError(f"{str(val_dir)!r} has {len(test_folders)} class folders but {str(train_dir)!r} has {len(names)}")
    test, _ = _read_class_dirs(val_dir, test_folders, classnames, list_file)
    return Dataset(spec.key, spec.title, [_clean(n) for n in names], spec.template, train, [], test, str(folder))


def _read_imagenet_variant(spec: DatasetSpec, folder: Path) -> Dataset:
    """CoOp ``imagenetv2.py`` (folders 0..999 in classnames.txt order) and ``imagenet_sketch.py``,
    ``imagenet_a.py``, ``imagenet_r.py`` (labels = sorted wnid folders; A and R have 200)."""
    list_file = folder / "classnames.txt"
    classnames = read_imagenet_classnames(list_file)
    image_dir = _require(folder / spec.image_dir, "image folder")
    if spec.numbered_folders:
        wnids = list(classnames)
        samples, names = [], []
        for label, wnid in enumerate(wnids):
            class_dir = _require(image_dir / str(label), "class folder")
            names.append(classnames[wnid])
            samples.extend(Sample(p, label) for p in _list_images(class_dir))
    else:
        samples, names = _read_class_dirs(image_dir, _subfolders(image_dir), classnames, list_file)
    return Dataset(spec.key, spec.title, [_clean(n) for n in names], spec.template, [], [], samples, str(folder))


_READERS = {"split_json": _read_split_json, "aircraft": _read_aircraft, "imagenet": _read_imagenet,
            "imagenet_variant": _read_imagenet_variant}


def load_dataset(name: str, data_root: str | Path) -> Dataset:
    """Read dataset `name` from ``data_root/<folder>`` in CoOp's layout (no image is opened).

    Args:
        name: registry key or alias (see :data:`SPECS`), e.g. ``"eurosat"``, ``"OxfordPets"``.
        data_root: CoOp's ``DATASET.ROOT``.

    Returns:
        :class:`Dataset` with absolute image paths.

    Raises:
        DataError: unknown name, or a missing/invalid split file, class list or image folder
            (the message names the file).
    """
    spec = SPECS[resolve_dataset_name(name)]
    folder = _require(Path(data_root) / spec.folder, "dataset folder")
    dataset = _READERS[spec.kind](spec, folder)
    if not dataset.test:
        raise DataError(f"dataset {spec.key!r} in {str(folder)!r} has no test images")
    log.info("%s: %d classes, %d train / %d val / %d test images", spec.title, dataset.num_classes,
             len(dataset.train), len(dataset.val), len(dataset.test))
    return dataset


def check_files(samples: Sequence[Sample]) -> None:
    """Raise :class:`DataError` naming the first image file of `samples` that does not exist."""
    missing = [s.path for s in samples if not os.path.isfile(s.path)]
    if missing:
        raise DataError(f"image file {missing[0]!r} is missing ({len(missing)} of {len(samples)} listed images "
                        f"missing); see docs/REPRODUCE.md for the data layout")


def open_sample(sample: Sample) -> Image.Image:
    """Decode one sample's image as RGB (EXIF rotation applied).

    Raises:
        DataError: the file is missing.
        ImageError: the file is not a decodable image.
    """
    try:
        with open(sample.path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"image file {sample.path!r} is missing; see docs/REPRODUCE.md for the data layout") from None
    except OSError as exc:
        raise DataError(f"image file {sample.path!r} cannot be read ({exc.strerror or exc})") from exc
    return open_image(data, name=sample.path)


__all__ = ["BASE_TO_NOVEL_DATASETS", "Dataset", "DatasetSpec", "IMAGENET_VARIANTS", "SPECS", "Sample",
           "check_files", "load_dataset", "open_sample", "read_imagenet_classnames", "resolve_dataset_name"]
