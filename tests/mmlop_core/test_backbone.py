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


UNREACHABLE_HUB = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def test_an_unreachable_hub_fails_at_once_with_one_whole_message_naming_the_fixes(tmp_path):
    """Issue 12 D.15: with the hub out of reach and nothing cached, loading a tag fails without
    open_clip's minute of retries and duplicated warnings; the message is whole (it was cut
    mid-word) and names MMLOP_PRETRAINED, --pretrained and the offline tiny backbone."""
    import subprocess
    import sys

    code = ("import mmlop_core as m\n"
            "try:\n"
            f"    m.load_backbone('ViT-B-16', 'openai', cache_dir={str(tmp_path)!r})\n"
            "except m.BackboneUnavailableError as e:\n"
            "    print('MESSAGE', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"HF_ENDPOINT": UNREACHABLE_HUB, "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"})
    message = proc.stdout.split("MESSAGE ", 1)[1].strip()
    assert "127.0.0.1 is unreachable" in message and message.endswith("(a functional demo)"), message
    for fix in ("MMLOP_PRETRAINED", "--pretrained", "MMLOP_BACKBONE=mmlop-tiny MMLOP_PRETRAINED=fmnist"):
        assert fix in message, message
    assert "Retrying" not in proc.stderr and "unreachable" not in proc.stderr, proc.stderr  # no log line besides


def test_weights_in_the_local_cache_are_found_without_the_network(tmp_path):
    """A tag whose weights are cached loads offline: the hub layout (refs/main -> snapshot) and
    open_clip's URL cache (basename under cache_dir) are both recognised."""
    from mmlop_core.hub import weights_source

    snap = tmp_path / "models--timm--vit_test.openai" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"w")
    (tmp_path / "models--timm--vit_test.openai" / "refs").mkdir()
    (tmp_path / "models--timm--vit_test.openai" / "refs" / "main").write_text("abc123")
    hub = weights_source({"hf_hub": "timm/vit_test.openai/"}, str(tmp_path))
    assert hub.cached == str(snap / "open_clip_pytorch_model.bin") and hub.port == 443
    assert weights_source({"hf_hub": "timm/other/"}, str(tmp_path)).cached is None
    (tmp_path / "ViT-T.pt").write_bytes(b"w")
    url = weights_source({"url": "http://example.org:8080/x/ViT-T.pt"}, str(tmp_path))
    assert (url.host, url.port, url.cached) == ("example.org", 8080, str(tmp_path / "ViT-T.pt"))
