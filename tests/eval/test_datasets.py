"""Dataset readers on tiny copies of CoOp's layouts (real Fashion-MNIST photos)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CLASSES, FIXTURES, TEST_PER_CLASS, TRAIN_PER_CLASS, VAL_PER_CLASS, folder_name

from mmlop_core.errors import DataError
from mmlop_core.eval import SPECS, load_dataset, resolve_dataset_name
from mmlop_core.eval.datasets import check_files, open_sample


def test_eurosat_split_json(coop_root: Path):
    ds = load_dataset("EuroSAT", coop_root)
    assert ds.key == "eurosat" and ds.template == "a centered satellite photo of {}."
    assert ds.classnames == [folder_name(c).replace("_", " ") for c in CLASSES]  # underscores -> spaces
    assert ds.classnames[0] == "Ankle Boot"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10 * TRAIN_PER_CLASS, 10 * VAL_PER_CLASS, 10 * TEST_PER_CLASS)
    assert all(Path(s.path).is_file() and "/eurosat/2750/" in s.path for s in ds.test)
    assert sorted({s.label for s in ds.train}) == list(range(10))
    img = open_sample(ds.test[0])
    assert img.mode == "RGB" and img.size == (28, 28)


def test_templates_follow_mmlop_md_section_7():
    expected = {"oxford_pets": "a photo of a {}, a type of pet.", "oxford_flowers": "a photo of a {}, a type of flower.",
                "fgvc_aircraft": "a photo of a {}, a type of aircraft.", "dtd": "{} texture.",
                "eurosat": "a centered satellite photo of {}.", "food101": "a photo of {}, a type of food.",
                "ucf101": "a photo of a person doing {}."}
    for key, spec in SPECS.items():
        assert spec.template == expected.get(key, "a photo of a {}."), key


def test_names_and_aliases():
    assert resolve_dataset_name("OxfordPets") == "oxford_pets"
    assert resolve_dataset_name("flowers102") == "oxford_flowers"
    assert resolve_dataset_name("ImageNet-A") == "imagenet_a"
    with pytest.raises(DataError, match="'mnist' is unknown"):
        resolve_dataset_name("mnist")


def test_imagenet_layout_and_variants(coop_root: Path):
    inet = load_dataset("imagenet", coop_root)
    assert inet.classnames == CLASSES[:6] and not inet.val
    assert len(inet.train) == 6 * TRAIN_PER_CLASS and len(inet.test) == 6 * TEST_PER_CLASS
    v2 = load_dataset("imagenetv2", coop_root)
    assert v2.classnames == CLASSES[:6] and len(v2.test) == 18 and not v2.train
    a = load_dataset("imagenet_a", coop_root)  # a subset of classes, relabelled 0.., README.txt ignored
    assert a.classnames == CLASSES[:6][1::2] and sorted({s.label for s in a.test}) == [0, 1, 2]
    assert load_dataset("imagenet-r", coop_root).classnames == a.classnames
    assert load_dataset("imagenet_sketch", coop_root).classnames == CLASSES[:6]


def test_fgvc_aircraft_text_files(tmp_path: Path):
    base = tmp_path / "fgvc_aircraft"
    (base / "images").mkdir(parents=True)
    variants = ["707-320", "A300B4", "Cessna 172"]
    (base / "variants.txt").write_text("\n".join(variants) + "\n")
    src = sorted((FIXTURES / "test" / "bag").glob("*.png"))
    for part in ("train", "val", "test"):
        lines = []
        for i, v in enumerate(variants * 2):
            image_id = f"{part}{i:03d}"
            (base / "images" / f"{image_id}.jpg").write_bytes(src[i].read_bytes())  # CoOp appends .jpg
            lines.append(f"{image_id} {v}")
        (base / f"images_variant_{part}.txt").write_text("\n".join(lines) + "\n")
    ds = load_dataset("fgvc_aircraft", tmp_path)
    assert ds.classnames == variants and ds.template == "a photo of a {}, a type of aircraft."
    assert [s.label for s in ds.test] == [0, 1, 2, 0, 1, 2]
    assert open_sample(ds.train[0]).mode == "RGB"
    (base / "images_variant_val.txt").unlink()
    with pytest.raises(DataError, match="images_variant_val.txt"):
        load_dataset("fgvc_aircraft", tmp_path)


def test_missing_files_are_named(coop_root: Path):
    (coop_root / "dtd" / "split_zhou_DescribableTextures.json").unlink()
    with pytest.raises(DataError, match=r"split file .*split_zhou_DescribableTextures\.json.* is missing"):
        load_dataset("dtd", coop_root)
    with pytest.raises(DataError, match=r"dataset folder .*caltech-101.* is missing"):
        load_dataset("caltech101", coop_root)
    (coop_root / "imagenet-sketch" / "classnames.txt").unlink()
    with pytest.raises(DataError, match=r"imagenet-sketch/classnames\.txt"):
        load_dataset("imagenet_sketch", coop_root)
    ds = load_dataset("eurosat", coop_root)
    Path(ds.test[3].path).unlink()
    with pytest.raises(DataError, match=rf"image file '{ds.test[3].path}' is missing \(1 of"):
        check_files(ds.test)
    with pytest.raises(DataError, match="is missing"):
        open_sample(ds.test[3])


def test_bad_split_json_entries(coop_root: Path):
    path = coop_root / "eurosat" / "split_zhou_EuroSAT.json"
    data = json.loads(path.read_text())
    data["test"][0] = ["only-a-path"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"test entry \['only-a-path'\] is not \[path, label, classname\]"):
        load_dataset("eurosat", coop_root)
    path.write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        load_dataset("eurosat", coop_root)
