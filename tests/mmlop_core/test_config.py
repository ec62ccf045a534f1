"""Adapter/train config validation and presets (docs/METHOD.md section 2)."""
from __future__ import annotations

import pytest

from mmlop_core import AdapterConfig, ConfigError, TrainConfig
from mmlop_core.config import PRESETS
from mmlop_core.prompts import LowRankPrompts


@pytest.mark.parametrize("preset, expected", [("mmlop", 11_556), ("ivlp", 46_080), ("ivlp+lscl", 46_080),
                                              ("coop", 4 * 512), ("zeroshot", 0), ("mmlop-noshare", 9 * 4 * 2 + 9 * (512 + 768))])
def test_trainable_parameter_count_at_vit_b16_widths(preset, expected):
    assert LowRankPrompts(AdapterConfig.from_preset(preset), 512, 768, 12, 12).trainable_parameters == expected


def test_share_u_across_layers_has_one_u_per_modality():
    cfg = AdapterConfig.from_preset("mmlop", share_u="layers")
    assert LowRankPrompts(cfg, 512, 768).trainable_parameters == 2 * 4 + 9 * (512 + 768)


def test_from_dict_round_trip_and_overrides():
    cfg = AdapterConfig.from_dict({"preset": "ivlp", "n_ctx": 2})
    assert cfg.rank is None and cfg.n_ctx == 2 and cfg.preset == "ivlp"
    assert AdapterConfig.from_dict(cfg.to_dict()) == cfg
    t = TrainConfig.from_dict({"epochs": 3, "lr": 1})
    assert TrainConfig.from_dict(t.to_dict()) == t and isinstance(t.lr, float)


@pytest.mark.parametrize("data, fragment", [
    ({"rnak": 2}, "unknown adapter config field 'rnak'"),
    ({"preset": "lora"}, "preset='lora' is unknown"),
    ({"rank": 0}, "rank=0 is out of range"),
    ({"rank": "2"}, "rank='2' must be of type int"),
    ({"n_ctx": True}, "must be"),
    ({"share_u": "both"}, "share_u='both' is not valid"),
    ({"drift": "sideways"}, "drift='sideways' is not valid"),
    ({"template": "a photo"}, "must contain '{}' exactly once"),
    ({"lambda_text": -1}, "lambda_text=-1.0 is out of range"),
    ({"text_depth": 0, "text_init": "words"}, "text_init='words' needs text prompts"),
    # control characters would reach the tokenizer, as they would in a class name (issue 12 C.6)
    ({"template": "a {}\u0000"}, "template="),
    ({"template": "a photo of a\n{}"}, "template="),
    ({"template": "a photo of a {}\u0085"}, "template="),
    ({"init_words": "a\u0000b c d"}, "init_words="),
    ({"init_words": "a photo\tof a"}, "init_words="),
    # the words init needs words to fit
    ({"text_init": "words", "init_words": ""}, "init_words="),
    ({"text_init": "words", "init_words": "   "}, "init_words="),
    ({"preset": "ivlp", "init_words": ""}, "init_words="),
])
def test_adapter_config_errors_name_the_field(data, fragment):
    with pytest.raises(ConfigError, match=None) as exc:
        AdapterConfig.from_dict(data)
    assert fragment in str(exc.value)


@pytest.mark.parametrize("data, fragment", [
    ({"epochs": -1}, "epochs=-1 is out of range"),
    ({"batch_size": 0}, "batch_size=0 is out of range"),
    ({"lr": "fast"}, "lr='fast' must be of type int or float"),
    ({"shots": 0}, "shots=0 is out of range"),
    ({"precision": "fp8"}, "precision='fp8' is not valid"),
    ({"speed": 1}, "unknown train config field 'speed'"),
])
def test_train_config_errors_name_the_field(data, fragment):
    with pytest.raises(ConfigError) as exc:
        TrainConfig.from_dict(data)
    assert fragment in str(exc.value)


def test_non_object_config_is_refused():
    with pytest.raises(ConfigError, match="must be a JSON object"):
        AdapterConfig.from_dict([1, 2])


def test_depth_beyond_backbone_is_refused():
    with pytest.raises(ConfigError, match="text_depth=13 exceeds the backbone's 12"):
        LowRankPrompts(AdapterConfig(text_depth=13), 512, 768, 12, 12)


def test_every_preset_builds():
    for name in PRESETS:
        LowRankPrompts(AdapterConfig.from_preset(name), 64, 96, 12, 12)


@pytest.mark.parametrize("template", [
    "a photo of a {} {foo}",   # a named field: str.format raised KeyError: 'foo' in the worker
    "a photo of a {0}",        # positional index
    "a {} and a {}",           # two class-name slots
    "a photo of a {!r}",       # conversion
    "a photo of a {:>20}",     # format spec
    "a photo of a {} {",       # unbalanced brace
    "a photo of a {} }",
    "a photo of a {{}}",       # escaped braces: no replacement field at all
    "a photo of a {}.{}",
])
def test_template_needs_exactly_one_plain_slot(template):
    with pytest.raises(ConfigError) as exc:
        AdapterConfig.from_dict({"template": template})
    assert "template=" in str(exc.value)


@pytest.mark.parametrize("template", ["a photo of a {}.", "{}", "a {{curly}} photo of a {}", "itap of the {}."])
def test_valid_templates_format_with_one_name(template):
    cfg = AdapterConfig.from_dict({"template": template})
    assert "bag" in cfg.template.format("bag")


@pytest.mark.parametrize("cls,data,fragment", [
    (TrainConfig, {"lr": 10**400}, "lr="), (TrainConfig, {"warmup_lr": -(10**400)}, "warmup_lr="),
    (TrainConfig, {"momentum": 10**309}, "momentum="),
    (AdapterConfig, {"init_std": 10**400}, "init_std="), (AdapterConfig, {"lambda_kl": 10**400}, "lambda_kl="),
])
def test_integer_too_large_for_a_float_is_a_config_error(cls, data, fragment):
    # issue 12 A.4: float(10**400) raised OverflowError (an API 500), not a ConfigError naming the field
    with pytest.raises(ConfigError, match=fragment):
        cls.from_dict(data)


@pytest.mark.parametrize("make, start", [
    (lambda: TrainConfig(batch_size=10**400), "batch_size=1000000000000000000000000000000000000..."),
    (lambda: TrainConfig(epochs=10**400), "epochs=1000000000000000000000000000000000000..."),
    (lambda: AdapterConfig(lambda_text="x" * 1000), "lambda_text='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."),
    (lambda: TrainConfig(shots=[0] * 500), "shots=[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ... must be of type int"),
    (lambda: AdapterConfig(drift="x" * 1000), "drift='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... is not valid"),
])
def test_a_huge_bad_value_is_cut_in_its_one_line_error(make, start):
    """A 401-digit integer or a 1,000-character string is shown by its first 37 characters."""
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value).startswith(start) and len(str(info.value)) < 120, str(info.value)[:300]
