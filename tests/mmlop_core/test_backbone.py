"""Backbone loading: random init, local files, typed errors with instructions."""
from __future__ import annotations

import logging

import pytest
import torch
from utils.core import tiny_backbone

import mmlop_core as m


def test_tiny_backbone_is_registered_and_frozen(caplog):
    with caplog.at_level(logging.WARNING):
        bb = m.load_backbone(m.TINY_MODEL, "none", seed=0)
    assert "seeded random weights" in caplog.text
    assert bb.text_layers >= 9 and bb.vision_layers >= 9 and bb.image_size <= 224
    assert not any(p.requires_grad for p in bb.model.parameters()) and not bb.model.training
    assert bb.weights_hash == tiny_backbone().weights_hash  # same seed, same weights
    assert m.load_backbone(m.TINY_MODEL, "none", seed=5).weights_hash != bb.weights_hash


def test_local_checkpoint_file_loads_the_same_weights(tmp_path):
    bb = tiny_backbone()
    path = tmp_path / "tiny.pt"
    torch.save(bb.model.state_dict(), path)
    loaded = m.load_backbone(m.TINY_MODEL, str(path))
    assert loaded.weights_hash == bb.weights_hash and loaded.pretrained == str(path)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(m.BackboneUnavailableError, match="does not exist; point MMLOP_PRETRAINED.*or use 'none'"):
        m.load_backbone("ViT-B-16", str(tmp_path / "ViT-B-16.pt"))


def test_corrupt_file_is_a_typed_error_that_does_not_advise_downloading(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(m.BackboneUnavailableError, match="is not a readable mmlop-tiny checkpoint") as err:
        m.load_backbone(m.TINY_MODEL, str(path))
    assert "download" not in str(err.value) and str(path) in str(err.value)


def test_a_directory_is_not_called_missing(tmp_path):
    folder = tmp_path / "weights.safetensors"
    folder.mkdir()
    with pytest.raises(m.BackboneUnavailableError, match="is a directory, not a weights file"):
        m.load_backbone(m.TINY_MODEL, str(folder))


def test_weights_of_another_model_name_the_mismatch():
    from mmlop_core.shipped import WEIGHTS_DIR
    with pytest.raises(m.BackboneUnavailableError, match="is not a readable ViT-B-16 checkpoint.*another model"):
        m.load_backbone("ViT-B-16", str(WEIGHTS_DIR / "mmlop-tiny-fmnist.safetensors"))


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(m.BackboneUnavailableError, match="pretrained='nope' is neither a file nor an open_clip tag for ViT-B-16.*openai"):
        m.load_backbone("ViT-B-16", "nope")


def test_unknown_model_and_device():
    with pytest.raises(m.ConfigError, match="backbone='ViT-Q-99' is not an open_clip model name"):
        m.load_backbone("ViT-Q-99", "none")
    if not torch.cuda.is_available():
        with pytest.raises(m.ConfigError, match="no CUDA device is available"):
            m.load_backbone(m.TINY_MODEL, "none", device="cuda")
