"""Checkpoints: safetensors + JSON round trip, validation, backbone refusal."""
from __future__ import annotations

import json
import zipfile

import pytest
import torch
from utils.core import fashion, quick_adapter, tiny_backbone

import mmlop_core as m
from mmlop_core.checkpoint import CONFIG_FILE, WEIGHTS_FILE


@pytest.fixture(scope="module")
def adapter():
    return quick_adapter("mmlop", steps=4, drift="both")


def test_reloaded_adapter_gives_identical_logits(adapter, tmp_path):
    size = m.save_adapter(adapter, tmp_path / "a")
    assert size == sum(f.stat().st_size for f in (tmp_path / "a").iterdir())
    loaded = m.load_adapter(tmp_path / "a", tiny_backbone())
    pred = m.Predictor(tiny_backbone())
    pixels = pred.pixels(fashion("test")[0][:6])
    assert torch.equal(pred.logits(adapter, pixels), pred.logits(loaded, pixels))
    assert loaded.class_names == adapter.class_names and loaded.config == adapter.config
    assert loaded.trainable_parameters == adapter.trainable_parameters
    meta = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert meta["backbone"]["weights_hash"] == tiny_backbone().weights_hash
    assert meta["trainable_parameters"] == adapter.trainable_parameters and meta["library_version"]
    assert len(meta["templates"]) == 60


def test_zip_export_loads_the_same(adapter, tmp_path):
    m.save_adapter(adapter, tmp_path / "a")
    m.export_adapter_zip(tmp_path / "a", tmp_path / "a.zip")
    loaded = m.load_adapter(tmp_path / "a.zip", tiny_backbone())
    assert torch.equal(loaded.class_features, adapter.class_features)


def test_checkpoint_for_another_backbone_is_refused(adapter, tmp_path):
    m.save_adapter(adapter, tmp_path / "a")
    other = tiny_backbone(seed=1)
    assert other.weights_hash != tiny_backbone().weights_hash
    with pytest.raises(m.BackboneMismatchError, match="was trained on backbone 'mmlop-tiny'.*load it with the backbone"):
        m.load_adapter(tmp_path / "a", other)
    with pytest.raises(m.BackboneMismatchError):
        m.Predictor(other).classify(adapter, fashion("test")[0][:1])


def _corrupt(tmp_path, adapter, edit):
    m.save_adapter(adapter, tmp_path / "a")
    edit(tmp_path / "a")
    return tmp_path / "a"


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: (d / WEIGHTS_FILE).unlink(), "adapter_model.safetensors is missing"),
    (lambda d: (d / CONFIG_FILE).write_text("{nope"), "is not valid JSON"),
    (lambda d: (d / WEIGHTS_FILE).write_bytes(b"\x00" * 20), "not a valid safetensors"),
    (lambda d: (d / CONFIG_FILE).write_text(json.dumps({"format_version": 99})), "unsupported checkpoint format_version 99"),
])
def test_broken_checkpoints_raise_checkpoint_error(adapter, tmp_path, edit, fragment):
    with pytest.raises(m.CheckpointError) as exc:
        m.load_adapter(_corrupt(tmp_path, adapter, edit), tiny_backbone())
    assert fragment in str(exc.value)


def test_wrong_shape_or_dtype_is_refused(adapter, tmp_path):
    from safetensors.torch import load_file, save_file
    d = _corrupt(tmp_path, adapter, lambda d: None)
    tensors = load_file(d / WEIGHTS_FILE)
    tensors["class_features"] = tensors["class_features"][:, :5].contiguous()
    save_file(tensors, d / WEIGHTS_FILE)
    with pytest.raises(m.CheckpointError, match="tensor 'class_features' is torch.float32 \\(3, 5\\), expected"):
        m.load_adapter(d)
    tensors = load_file(d / WEIGHTS_FILE)
    tensors["class_features"] = adapter.class_features.double()
    save_file(tensors, d / WEIGHTS_FILE)
    with pytest.raises(m.CheckpointError, match="torch.float64"):
        m.load_adapter(d)


def test_not_a_zip_and_missing_path(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"PK nothing")
    with pytest.raises(m.CheckpointError, match="neither an adapter directory nor a zip"):
        m.load_adapter(tmp_path / "x.zip")
    with pytest.raises(m.CheckpointError, match="does not exist"):
        m.load_adapter(tmp_path / "missing")
    with zipfile.ZipFile(tmp_path / "y.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(m.CheckpointError, match="has no adapter_config.json"):
        m.load_adapter(tmp_path / "y.zip")


def test_checkpoint_is_small(adapter, tmp_path):
    assert m.save_adapter(adapter, tmp_path / "a") < 40_000  # tiny backbone, 3 classes
