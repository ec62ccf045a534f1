"""Batched augmentation and class-folder loading."""
from __future__ import annotations

import pytest
import torch
from utils.core import fashion, tiny_backbone

import mmlop_core as m
from mmlop_core.data import BatchAugment


def test_without_augment_equals_the_eval_preprocessing():
    bb = tiny_backbone()
    images = fashion("train")[0][:5]
    aug = BatchAugment(images, bb.preprocess, bb.image_size, 0.08, False, bb.device)
    expected = torch.stack([bb.preprocess(im) for im in images])
    assert torch.allclose(aug(torch.arange(5)), expected, atol=1e-6)


def test_augment_crops_and_flips_per_row_and_is_seeded():
    bb = tiny_backbone()
    images = fashion("train")[0][:4]
    aug = BatchAugment(images, bb.preprocess, bb.image_size, 0.3, True, bb.device)
    idx = torch.tensor([0, 0, 1, 3])
    torch.manual_seed(0)
    a = aug(idx)
    torch.manual_seed(0)
    b = aug(idx)
    assert a.shape == (4, 3, 64, 64) and torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # same image, different crop
    plain = BatchAugment(images, bb.preprocess, bb.image_size, 1.0, False, bb.device)(idx)
    # bilinear resampling is a convex combination: each crop stays within its source's value range
    for row, src in zip(a, plain):
        assert float(row.min()) >= float(src.min()) - 1e-4 and float(row.max()) <= float(src.max()) + 1e-4


def test_full_area_square_crop_is_identity_or_mirror():
    bb = tiny_backbone()
    images = fashion("train")[0][:3]
    aug = BatchAugment(images, bb.preprocess, bb.image_size, 1.0, True, bb.device)
    aug.RATIO = (1.0, 1.0)
    out = aug(torch.arange(3))
    plain = BatchAugment(images, bb.preprocess, bb.image_size, 1.0, False, bb.device)(torch.arange(3))
    for i in range(3):
        assert torch.allclose(out[i], plain[i], atol=1e-4) or torch.allclose(out[i], plain[i].flip(-1), atol=1e-4)


def test_load_class_folders_errors(tmp_path):
    with pytest.raises(m.DataError, match="has no class folders"):
        m.load_class_folders(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(m.DataError, match="has no images"):
        m.load_class_folders(tmp_path)
    (tmp_path / "cat" / "a.png").write_bytes(b"not a png")
    with pytest.raises(m.ImageError, match="a.png: not a decodable image"):
        m.load_class_folders(tmp_path)
