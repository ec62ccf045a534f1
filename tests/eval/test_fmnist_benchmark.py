"""``mmlop eval prepare-fmnist`` and the eval commands on it with the shipped tiny backbone (issue 9 item 3)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from service.console import app
from mmlop_core import fmnist
from mmlop_core.eval import base_novel_labels, load_dataset

SHIPPED = ["--backbone", "mmlop-tiny", "--pretrained", "fmnist", "--device", "cpu", "--quiet", "--eval-batch-size", "32"]


def invoke(*args: str, expect: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def fm_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fmnist")
    invoke("eval", "prepare-fmnist", root, "--train-per-class", 4, "--test-per-class", 3, "--quiet")
    return root


def test_layout_split_and_base_novel_halves(fm_root: Path):
    ds = load_dataset("fmnist", fm_root)
    assert ds.classnames == list(fmnist.CLASS_NAMES) and len(ds.train) == 40 and len(ds.test) == 30 and not ds.val
    base, novel = base_novel_labels(ds.num_classes)
    assert [ds.classnames[i] for i in base] == ["t-shirt", "trouser", "pullover", "dress", "coat"]
    assert [ds.classnames[i] for i in novel] == ["sandal", "shirt", "sneaker", "bag", "ankle boot"]
    for key in ("fmnist-sketch", "fmnist-negative", "fmnist-blur", "fmnist-v2"):
        target = load_dataset(key, fm_root)
        assert not target.train and len(target.test) == 30 and target.classnames == ds.classnames


def test_train_photos_come_from_the_train_split_and_targets_from_the_test_split(fm_root: Path):
    train_x, train_y = fmnist.read_split("train")
    test_x, test_y = fmnist.read_split("test")
    split = json.loads((fm_root / "fmnist" / "split_zhou_FashionMNIST.json").read_text())
    rel, label, name = split["train"][0]
    index = int(Path(rel).stem)
    assert fmnist.CLASS_NAMES[train_y[index]] == name and train_y[index] == label
    assert np.array_equal(np.asarray(Image.open(fm_root / "fmnist" / "images" / rel)), train_x[index])
    neg = json.loads((fm_root / "fmnist-negative" / "split_zhou_FashionMNISTNegative.json").read_text())
    rel, label, _ = neg["test"][0]
    index = int(Path(rel).stem)
    assert test_y[index] == label
    assert np.array_equal(np.asarray(Image.open(fm_root / "fmnist-negative" / "images" / rel)), 255 - test_x[index])


def test_base2novel_and_xd_run_on_the_shipped_tiny_backbone(fm_root: Path, tmp_path: Path):
    out = tmp_path / "out"
    common = ["--data-root", fm_root, "--seeds", "1", "--epochs", "1", "--out", out, *SHIPPED]
    res = invoke("eval", "base2novel", "--datasets", "fmnist", "--preset", "mmlop", *common)
    assert "mmlop: base" in res.output
    report = json.loads((out / "base2novel-mmlop.json").read_text())
    assert report["meta"]["pretrained"] == "fmnist"
    cell = report["results"]["mmlop"]["cells"][0]
    assert cell["train_images"] == 20 and cell["test_base_images"] == 15 and cell["test_novel_images"] == 15
    res = invoke("eval", "xd", "--source", "fmnist", "--preset", "zeroshot", "--shots", "2", *common)
    targets = json.loads((out / "xd-zeroshot.json").read_text())["results"]["targets"]["datasets"]
    assert sorted(targets) == ["fmnist-blur", "fmnist-negative", "fmnist-sketch", "fmnist-v2"]


def test_missing_source_is_one_line_naming_the_package(tmp_path: Path):
    res = invoke("eval", "prepare-fmnist", tmp_path / "x", "--source", tmp_path / "nowhere", expect=2)
    assert "dataset-fashion-mnist" in res.output and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
