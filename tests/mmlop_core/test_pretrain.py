"""The tiny CLIP pretraining recipe (issue 9 item 1): a few seeded steps of the real command."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

import mmlop_core as m
from service.console import app
from mmlop_core import fmnist
from mmlop_core.pretrain import PretrainConfig, pretrain_tiny

SMOKE = ["--max-steps", "2", "--batch-size", "16", "--holdout", "40", "--max-photos", "64", "--threads", "1"]


def _pretrain(out: Path) -> dict:
    result = CliRunner().invoke(app, ["pretrain-tiny", "--out", str(out), *SMOKE])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output.strip().splitlines()[-1])


def test_smoke_writes_fp16_weights_that_load_as_the_tiny_backbone(tmp_path: Path):
    metrics = _pretrain(tmp_path / "w.safetensors")
    assert metrics["steps"] == 2 and metrics["model"] == "mmlop-tiny" and 0 <= metrics["holdout_zero_shot_top1"] <= 1
    assert metrics["holdout_photos"] == 40 and metrics["config"]["seed"] == 0
    assert metrics["logit_scale"] > 14.0  # the learned temperature, from CLIP's initial 14.29
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert {f.get_tensor(k).dtype for k in keys} == {torch.float16}
    random_init = m.load_backbone("mmlop-tiny", "none", seed=0)
    loaded = m.load_backbone("mmlop-tiny", str(tmp_path / "w.safetensors"))
    assert sorted(keys) == sorted(random_init.model.state_dict())
    assert loaded.weights_hash != random_init.weights_hash


def test_same_seed_same_file(tmp_path: Path):
    a, b = _pretrain(tmp_path / "a.safetensors"), _pretrain(tmp_path / "b.safetensors")
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_the_test_split_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real = fmnist.read_split

    def train_only(split, root=fmnist.DEFAULT_DIR):
        assert split == "train", "pretraining read the test split"
        return real(split, root)

    monkeypatch.setattr(fmnist, "read_split", train_only)
    pretrain_tiny(tmp_path / "w.safetensors", PretrainConfig(max_steps=1, batch_size=8, holdout=10, max_photos=16))


def test_the_logit_scale_learns_at_its_own_rate(tmp_path: Path):
    """At 1x AdamW moves the log-scale ~lr per step (nothing shows in 5 warm-up steps, fp16); at the
    default 100x it moves visibly, so the temperature is learned within the short schedule."""
    def log_scale(mult: str) -> float:
        out = tmp_path / f"x{mult}.safetensors"
        result = CliRunner().invoke(app, ["pretrain-tiny", "--out", str(out), *SMOKE[2:], "--max-steps", "5",
                                          "--logit-scale-lr-mult", mult])
        assert result.exit_code == 0, (result.output, result.exception)
        assert json.loads(result.output.strip().splitlines()[-1])["config"]["logit_scale_lr_mult"] == float(mult)
        with safe_open(str(out), "pt") as f:
            return float(f.get_tensor("logit_scale"))

    start = torch.tensor(PretrainConfig().init_logit_scale).log().half().item()
    assert PretrainConfig().logit_scale_lr_mult == 100.0
    assert log_scale("1") == pytest.approx(start, abs=2e-3)
    assert abs(log_scale("100") - start) > 5e-3


@pytest.mark.parametrize("field, value, message", [
    ("logit_scale_lr_mult", "abc", "logit_scale_lr_mult='abc' must be a number"),
    ("lr", None, "lr=None must be a number"),
    ("logit_scale_lr_mult", 10**400, "logit_scale_lr_mult=1000000000000000000000000000000000000... is out of range"),
    ("batch_size", 16.5, "batch_size=16.5 must be an integer"),
    ("holdout", 40.0, "holdout=40.0 must be an integer"),
])
def test_bad_config_values_name_the_field_in_one_short_line(field, value, message):
    with pytest.raises(m.ConfigError) as info:
        PretrainConfig(**{field: value})
    assert str(info.value).startswith(message) and len(str(info.value)) < 120 and "\n" not in str(info.value)


def test_float_fields_given_as_ints_are_stored_as_floats():
    """The weights' metadata then reads the same from Python (100) and from the CLI (100.0)."""
    config = PretrainConfig(logit_scale_lr_mult=100, epochs=2, lr=1)
    assert (config.logit_scale_lr_mult, config.epochs, config.lr) == (100.0, 2.0, 1.0)
    assert all(type(v) is float for v in (config.logit_scale_lr_mult, config.epochs, config.lr))
    assert type(config.batch_size) is int


def test_captions_describe_each_photo_domain():
    for domain in fmnist.PRETRAIN_DOMAINS:
        captions = fmnist.DOMAIN_CAPTIONS[domain]
        assert captions and all(c.count("{}") == 1 for c in captions)
    assert any("negative" in c for c in fmnist.DOMAIN_CAPTIONS["negative"])
    assert any("sketch" in c for c in fmnist.DOMAIN_CAPTIONS["sketch"])


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "0"], "epochs=0.0 is out of range"),
    (["--batch-size", "1"], "error: Invalid value for '--batch-size'"),  # bounded where it is parsed
    (["--data-dir", "/nonexistent"], "dataset-fashion-mnist"),
    (["--logit-scale-lr-mult", "-1"], "logit_scale_lr_mult=-1.0 is out of range"),
])
def test_bad_options_are_one_line(tmp_path: Path, args, fragment):
    result = CliRunner().invoke(app, ["pretrain-tiny", "--out", str(tmp_path / "w.safetensors"), *args])
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output
