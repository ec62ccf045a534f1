"""Evidence on the shipped tiny CLIP (``mmlop-tiny``/``fmnist``, issue 9 items 2 and 4).

The backbone was pretrained here on Fashion-MNIST's train split only; these tests score it on
Fashion-MNIST's test photos (Debian's dataset-fashion-mnist, installed by ``make test``): all
10,000 for zero-shot, the first 200 of each class for base-to-novel:
- its zero-shot top-1 with the 60-template ensemble lies in [0.55, 0.85];
- the default ``mmlop`` preset with the paper's default settings (16 shots, 20 epochs, seed 1)
  meets issue 9's bar: base-class accuracy >= zero-shot + 5 points, novel-class accuracy within
  3 points of zero-shot, HM above zero-shot's; and LSCL keeps novel-class accuracy above the same
  preset without it, on that seed (docs/TINY_EVAL.md has the 3-seed figures: base holds on every
  seed, novel does not, and on the 3-seed mean the preset without LSCL keeps more novel accuracy).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import mmlop_core as m
from service.console import app
from mmlop_core import fmnist
from mmlop_core.pretrain import zero_shot_accuracy
from mmlop_core.shipped import SHIPPED, WEIGHTS_DIR, file_sha256, verified_path
from mmlop_core.templates import ensemble_templates

ZERO_SHOT_RANGE = (0.55, 0.85)


def test_shipped_file_matches_its_recorded_sha256_and_size_budget():
    entry = SHIPPED[("mmlop-tiny", "fmnist")]
    path = WEIGHTS_DIR / entry.filename
    assert file_sha256(path) == entry.sha256
    assert path.stat().st_size <= 25 * 1024 * 1024


def test_a_tampered_file_is_refused_with_both_digests(tmp_path: Path):
    entry = SHIPPED[("mmlop-tiny", "fmnist")]
    data = bytearray((WEIGHTS_DIR / entry.filename).read_bytes())
    data[-1] ^= 0x01
    (tmp_path / entry.filename).write_bytes(bytes(data))
    with pytest.raises(m.BackboneUnavailableError, match=f"fail their integrity check: sha256 [0-9a-f]{{64}} but {entry.sha256}"):
        verified_path("mmlop-tiny", "fmnist", tmp_path)
    with pytest.raises(m.BackboneUnavailableError, match="missing from this installation"):
        verified_path("mmlop-tiny", "fmnist", tmp_path / "empty")


def test_the_tag_is_offered_only_for_the_tiny_model():
    with pytest.raises(m.BackboneUnavailableError, match="neither a file nor an open_clip tag"):
        m.load_backbone("ViT-B-16", "fmnist")


@pytest.mark.slow
def test_zero_shot_top1_on_the_10k_test_photos_is_a_clip_like_prior():
    bb = m.load_backbone("mmlop-tiny", "fmnist")
    assert bb.pretrained == "fmnist"
    images, labels = fmnist.read_split("test")
    pixels = torch.from_numpy(np.stack([np.asarray(Image.fromarray(im, "L").resize(
        (bb.image_size, bb.image_size), Image.Resampling.BICUBIC)) for im in images]))
    norm = bb.preprocess.transforms[-1]
    with torch.no_grad():
        acc = zero_shot_accuracy(bb.model, bb.tokenizer, pixels, torch.from_numpy(labels), norm.mean, norm.std,
                                 ensemble_templates("a photo of a {}.", True))
    assert ZERO_SHOT_RANGE[0] <= acc <= ZERO_SHOT_RANGE[1], acc


@pytest.fixture(scope="module")
def base2novel(tmp_path_factory) -> dict:
    """Base-to-novel of zeroshot, mmlop and mmlop-nolscl with the paper's defaults, seed 1.

    16 shots per base class from the first 200 train photos of each class; tested on the first
    200 test photos of each class (1,000 base, 1,000 novel), through the real CLI.
    """
    root, out = tmp_path_factory.mktemp("fm"), tmp_path_factory.mktemp("out")
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "prepare-fmnist", str(root), "--train-per-class", "200", "--test-per-class", "200",
                              "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "ablation", "--data-root", str(root), "--datasets", "fmnist", "--seeds", "1",
                              "--presets", "zeroshot", "mmlop", "mmlop-nolscl", "--backbone", "mmlop-tiny",
                              "--pretrained", "fmnist", "--device", "cpu", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    results = json.loads((out / "ablation.json").read_text())["results"]
    cell = results["mmlop"]["cells"][0]
    assert cell["settings"]["train"]["lr"] == 0.0025 and cell["settings"]["train"]["epochs"] == 20
    assert cell["settings"]["adapter"] == m.AdapterConfig().to_dict() and cell["test_base_images"] == 1000
    return {p: results[p]["datasets"]["fmnist"] for p in results}


@pytest.mark.slow
def test_default_mmlop_raises_base_accuracy_by_5_points(base2novel):
    """Issue 9 item 4: base >= zero-shot + 5 points (measured 77.0 against 69.5)."""
    zs, mm = base2novel["zeroshot"], base2novel["mmlop"]
    assert mm["base"] >= zs["base"] + 5, base2novel


@pytest.mark.slow
def test_default_mmlop_keeps_novel_within_3_points_and_beats_zero_shot_hm(base2novel):
    """Issue 9 item 4: novel >= zero-shot - 3 and HM > zero-shot's (measured 78.4 vs 78.0, 77.7 vs 73.5)."""
    zs, mm = base2novel["zeroshot"], base2novel["mmlop"]
    assert mm["novel"] >= zs["novel"] - 3 and mm["hm"] > zs["hm"], base2novel


@pytest.mark.slow
def test_lscl_keeps_novel_accuracy_above_the_preset_without_it(base2novel):
    """On this seed LSCL keeps novel accuracy 4.7 points above the preset without it (78.4 vs 73.7)."""
    mm, nolscl = base2novel["mmlop"], base2novel["mmlop-nolscl"]
    assert mm["novel"] >= nolscl["novel"] + 3, base2novel
