"""Batched augmentation and class-folder loading."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
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
    # crops are resampled 8-bit images: every value is a normalised level in [0, 255]
    low, high = (0 - aug.mean) / aug.std, (1 - aug.mean) / aug.std  # (1, 3, 1, 1)
    assert bool((a >= low - 1e-5).all()) and bool((a <= high + 1e-5).all())
    assert not torch.allclose(a[2], plain[2])  # rows are augmented, not the eval view


def test_full_area_square_crop_is_identity_or_mirror():
    bb = tiny_backbone()
    images = fashion("train")[0][:3]
    aug = BatchAugment(images, bb.preprocess, bb.image_size, 1.0, True, bb.device)
    aug.RATIO = (1.0, 1.0)
    out = aug(torch.arange(3))
    plain = BatchAugment(images, bb.preprocess, bb.image_size, 1.0, False, bb.device)(torch.arange(3))
    for i in range(3):
        assert torch.allclose(out[i], plain[i], atol=1e-4) or torch.allclose(out[i], plain[i].flip(-1), atol=1e-4)


@pytest.mark.parametrize("crop_small", [False, True])
def test_photos_smaller_than_the_input_are_only_flipped_without_crop_small(crop_small):
    """A 28 px photo on the 64 px backbone: an 8% crop is ~8x8 source pixels blown up to 64x64;
    with ``crop_small=False`` such a photo keeps its eval view and gets the random flip only."""
    bb = tiny_backbone()
    images = fashion("train")[0][:4]
    assert max(max(im.size) for im in images) < bb.image_size
    aug = BatchAugment(images, bb.preprocess, bb.image_size, 0.08, True, bb.device, crop_small=crop_small)
    plain = BatchAugment(images, bb.preprocess, bb.image_size, 0.08, False, bb.device)
    idx = torch.arange(4).repeat(4)
    torch.manual_seed(0)
    out, view = aug(idx), plain(idx)
    kept = [torch.allclose(out[i], view[i], atol=1e-6) for i in range(len(idx))]
    mirrored = [torch.allclose(out[i], view[i].flip(-1), atol=1e-6) for i in range(len(idx))]
    if crop_small:
        assert not all(k or f for k, f in zip(kept, mirrored))  # cropped
    else:
        assert all(k or f for k, f in zip(kept, mirrored)) and any(kept) and any(mirrored)


def _wide_image(width: int, height: int) -> Image.Image:
    """RGB image whose centre square is blue and whose left/right edges are red."""
    img = Image.new("RGB", (width, height), (0, 0, 255))
    edge = (width - height) // 2
    img.paste((255, 0, 0), (0, 0, edge, height))
    img.paste((255, 0, 0), (width - edge, 0, width, height))
    return img


def _red_rows(x: torch.Tensor, aug: BatchAugment) -> list[bool]:
    """Per row of a normalised batch (B, 3, S, S): does any pixel read clearly red?"""
    rgb = x * aug.std + aug.mean  # back to [0, 1]
    red = (rgb[:, 0] > 0.6) & (rgb[:, 2] < 0.4)  # (B, S, S)
    return red.flatten(1).any(dim=1).tolist()


@pytest.mark.parametrize("scale", [1, 10])  # 10: a photo far larger than the crop output
def test_random_crops_come_from_the_original_image_not_its_centre_square(scale):
    """Issue 12 E.20: crops were taken from the 64 px centre crop, so the edges were never seen."""
    bb = tiny_backbone()
    side = bb.image_size
    image = _wide_image(3 * side * scale, side * scale)
    plain = BatchAugment([image], bb.preprocess, side, 0.08, False, bb.device)
    assert not any(_red_rows(plain(torch.zeros(1, dtype=torch.long)), plain))  # eval view: centre only
    aug = BatchAugment([image], bb.preprocess, side, 0.08, True, bb.device)
    seen = []
    for seed in range(8):
        torch.manual_seed(seed)
        out = aug(torch.zeros(4, dtype=torch.long))
        assert out.shape == (4, 3, side, side)
        seen += _red_rows(out, aug)
    assert any(seen), "no training crop ever contained the image's edges"
    assert not all(seen)  # and some crops stay inside the blue centre


def test_load_class_folders_errors(tmp_path):
    with pytest.raises(m.DataError, match="has no class folders"):
        m.load_class_folders(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(m.DataError, match="has no images"):
        m.load_class_folders(tmp_path)
    (tmp_path / "cat" / "a.png").write_bytes(b"not a png")
    with pytest.raises(m.ImageError, match="a.png: not a decodable image"):
        m.load_class_folders(tmp_path)
