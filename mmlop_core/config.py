"""Configuration of an MMLoP adapter and of its training run.

Every choice that docs/METHOD.md marks as our reconstruction ([recon]) is a field here, so that the
evaluation harness can settle it on real data. Presets name the baselines and ablations that
share this one code path (docs/METHOD.md sections 2-5; issue "Reproduce the paper").
"""
from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass
from enum import Enum
from string import Formatter
from typing import Any

from .errors import ConfigError, short_repr


class ShareU(str, Enum):
    """Which token-side factors U (n x r) are shared (docs/METHOD.md section 2, [recon])."""

    MODALITIES = "modalities"  # one U_l per layer, shared by text and vision (default)
    LAYERS = "layers"  # one U per modality, shared by all layers
    NONE = "none"  # one U_l per layer and modality


class DriftMode(str, Enum):
    """Where uniform drift correction applies (docs/METHOD.md section 4, [recon])."""

    TEXT = "text"
    IMAGE = "image"
    BOTH = "both"
    OFF = "off"


class TextInit(str, Enum):
    """How the layer-0 text prompt factors are initialised (docs/METHOD.md section 2)."""

    NORMAL = "normal"  # random, prompt entries ~ N(0, init_std^2)
    WORDS = "words"  # rank-r SVD fit to the token embedding of `init_words`


class KLReduction(str, Enum):
    """How LSCL's logit term KL(softmax(z0) || softmax(z_hat)) is averaged (section 3, [recon]).

    The formula in docs/METHOD.md section 3 reads as the KL of each image averaged over the batch; PromptSRC's trainer
    sums the elementwise KL and divides by B * C (``logits.numel()``), which is that value / C.
    """

    BATCHMEAN = "batchmean"  # mean over images of KL per image (the formula as written)
    NUMEL = "numel"  # summed KL / (B * C), PromptSRC's code


class LSCLScale(str, Enum):
    """How LSCL's feature-consistency weights meet the backbone (docs/METHOD.md section 3, [recon]).

    ``backbone`` multiplies lambda_text and lambda_image by
    :func:`mmlop_core.losses.feature_weight_scale` (s / 100) * sqrt(D / 512), which keeps their
    pull against CE what it is on CLIP ViT-B/16, where PromptSRC chose them (x 1.00003 there,
    x 0.1179 on ``mmlop-tiny``/``fmnist``). The default ``none`` uses the weights as written: on
    the first tiny backbone ``backbone`` lifted base accuracy but novel accuracy collapsed on some
    seeds (docs/TINY_EVAL.md, "Calibrating the consistency weights"), so the harness must settle it.
    """

    BACKBONE = "backbone"  # lambda_text, lambda_image x (s / 100) x sqrt(D / 512)
    NONE = "none"  # the weights as written, whatever the backbone


class Precision(str, Enum):
    """Numeric precision of the training forward passes (docs/METHOD.md section 5)."""

    AUTO = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


def _enum(cls: type[Enum], value: Any, name: str) -> Enum:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ConfigError(f"{name}={short_repr(value)} is not valid; use one of {allowed}") from None


def _check_type(name: str, value: Any, types: tuple[type, ...], optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{name}={short_repr(value)} must be a number, not a boolean")
    if not isinstance(value, types):
        wanted = " or ".join(t.__name__ for t in types) + (" or null" if optional else "")
        raise ConfigError(f"{name}={short_repr(value)} must be of type {wanted}")


def _as_float(name: str, value: int | float) -> float:
    """``float(value)``; an integer too large for a double is a ConfigError naming the field."""
    try:
        return float(value)
    except OverflowError:
        raise ConfigError(f"{name}={short_repr(value)} is out of range (too large for a float)") from None


def _check_text(name: str, value: str) -> None:
    """Text that reaches the tokenizer holds no control characters (a NUL, a newline), as class names."""
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ConfigError(f"{name}={value[:60]!r} holds control characters; remove them")


def _check_range(name: str, value: float | None, lo: float, hi: float) -> None:
    if value is not None and not lo <= value <= hi:
        raise ConfigError(f"{name}={short_repr(value)} is out of range; allowed {lo} to {hi}")


class _DictMixin:
    """`from_dict` / `to_dict` shared by the config dataclasses (JSON-compatible values)."""

    @classmethod
    def _field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (enums as their string values)."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = v.value if isinstance(v, Enum) else (list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def _reject_unknown(cls, data: Any, what: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - cls._field_names())
        if unknown:
            raise ConfigError(f"unknown {what} field {unknown[0]!r}; known fields: {', '.join(sorted(cls._field_names()))}")


@dataclass
class AdapterConfig(_DictMixin):
    """Shape and regularisation of one MMLoP adapter.

    Defaults are the `mmlop` preset: depth J=9, n=4 tokens, rank r=1, U shared across
    modalities, i.e. 9*(4*1) + 9*1*(512+768) = 11,556 trainable parameters at ViT-B/16
    (docs/METHOD.md section 2). ``rank=None`` learns each prompt matrix directly (IVLP, 46,080).

    Raises:
        ConfigError: on any unknown preset, wrong type or out-of-range value.
    """

    preset: str = "mmlop"  # name of the preset these values started from (informational)
    n_ctx: int = 4  # prompt tokens per modality per layer (n)
    text_depth: int = 9  # layers 0..J_t-1 of the text tower get prompts (0 = no text prompts)
    vision_depth: int = 9  # layers 0..J_v-1 of the vision tower get prompts (0 = none)
    rank: int | None = 1  # r of P = U @ V; None = full rank (P learned directly, IVLP)
    share_u: ShareU = ShareU.MODALITIES  # which U factors are shared
    init_std: float = 0.02  # std of the initial prompt entries P (normal init)
    text_init: TextInit = TextInit.NORMAL  # layer-0 text factors: random or fitted to words
    init_words: str = "a photo of a"  # words whose embedding the `words` init fits
    lambda_text: float = 25.0  # LSCL weight of mean|t_hat - t0| (section 3)
    lambda_image: float = 10.0  # LSCL weight of mean|f_hat - f0|
    lambda_kl: float = 1.0  # LSCL weight of KL(softmax(z0) || softmax(z_hat))
    kl_reduction: KLReduction = KLReduction.BATCHMEAN  # KL averaged per image, or PromptSRC's / (B*C)
    lscl_scale: LSCLScale = LSCLScale.NONE  # or calibrate the feature weights to the backbone's s and D
    drift: DriftMode = DriftMode.TEXT  # uniform drift correction at inference (section 4)
    template: str = "a photo of a {}."  # dataset template; '{}' is replaced by the class name
    ensemble_templates: bool = True  # t0 averages the 60 ImageNet templates + `template`

    def __post_init__(self) -> None:
        _check_type("preset", self.preset, (str,))
        for name in ("n_ctx", "text_depth", "vision_depth"):
            _check_type(name, getattr(self, name), (int,))
        _check_range("n_ctx", self.n_ctx, 1, 32)
        _check_range("text_depth", self.text_depth, 0, 48)
        _check_range("vision_depth", self.vision_depth, 0, 48)
        _check_type("rank", self.rank, (int,), optional=True)
        _check_range("rank", self.rank, 1, 4096)
        self.share_u = _enum(ShareU, self.share_u, "share_u")  # type: ignore[assignment]
        self.text_init = _enum(TextInit, self.text_init, "text_init")  # type: ignore[assignment]
        self.drift = _enum(DriftMode, self.drift, "drift")  # type: ignore[assignment]
        self.kl_reduction = _enum(KLReduction, self.kl_reduction, "kl_reduction")  # type: ignore[assignment]
        self.lscl_scale = _enum(LSCLScale, self.lscl_scale, "lscl_scale")  # type: ignore[assignment]
        for name in ("init_std", "lambda_text", "lambda_image", "lambda_kl"):
            _check_type(name, getattr(self, name), (int, float))
            setattr(self, name, _as_float(name, getattr(self, name)))
        _check_range("init_std", self.init_std, 1e-6, 10.0)
        for name in ("lambda_text", "lambda_image", "lambda_kl"):
            _check_range(name, getattr(self, name), 0.0, 1e4)
        _check_type("init_words", self.init_words, (str,))
        _check_type("template", self.template, (str,))
        _check_text("init_words", self.init_words)
        _check_text("template", self.template)
        try:  # the replacement fields str.format would fill: only one plain '{}' may be there
            slots = [(name, spec, conv) for _, name, spec, conv in Formatter().parse(self.template) if name is not None]
        except ValueError:  # an unmatched '{' or '}'
            slots = []
        if slots != [("", "", None)]:
            raise ConfigError(f"template={self.template!r} must contain '{{}}' exactly once (the class name) and no "
                              "other '{...}' field; write a literal brace as '{{' or '}}'")
        _check_type("ensemble_templates", self.ensemble_templates, (bool,))
        if self.text_init is TextInit.WORDS and self.text_depth == 0:
            raise ConfigError("text_init='words' needs text prompts; set text_depth >= 1")
        if self.text_init is TextInit.WORDS and not self.init_words.strip():
            raise ConfigError(f"init_words={self.init_words!r} is empty, and text_init='words' starts the text "
                              "prompts from its words; give words (e.g. 'a photo of a') or use text_init='normal'")

    @property
    def prompted(self) -> bool:
        """True when the adapter has any prompt (False for the zero-shot preset)."""
        return self.text_depth > 0 or self.vision_depth > 0

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> AdapterConfig:
        """Config of preset `name` with `overrides` applied.

        Raises:
            ConfigError: unknown preset or invalid override.
        """
        if name not in PRESETS:
            raise ConfigError(f"preset={name!r} is unknown; use one of {', '.join(PRESETS)}")
        values = {**PRESETS[name], "preset": name, **overrides}
        unknown = sorted(set(values) - cls._field_names())
        if unknown:
            raise ConfigError(f"unknown adapter config field {unknown[0]!r}")
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """Validate a JSON dict: `preset` (default 'mmlop') plus field overrides.

        Raises:
            ConfigError: unknown field, unknown preset, wrong type or out-of-range value.
        """
        cls._reject_unknown(data, "adapter config")
        data = dict(data)
        return cls.from_preset(data.pop("preset", "mmlop"), **data)


# Baselines and ablations on one code path (issue 6). Values override AdapterConfig defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "mmlop": {},
    # IVLP / PromptSRC reference code: layer-0 text prompts start as the embedding of "a photo of a".
    "ivlp": {"rank": None, "lambda_text": 0.0, "lambda_image": 0.0, "lambda_kl": 0.0, "drift": "off",
             "text_init": "words"},
    "ivlp+lscl": {"rank": None, "drift": "off", "text_init": "words"},
    "coop": {"text_depth": 1, "vision_depth": 0, "rank": None, "lambda_text": 0.0,
             "lambda_image": 0.0, "lambda_kl": 0.0, "drift": "off"},
    "zeroshot": {"text_depth": 0, "vision_depth": 0, "rank": None, "lambda_text": 0.0,
                 "lambda_image": 0.0, "lambda_kl": 0.0, "drift": "off"},
    "mmlop-fullrank": {"rank": None},
    "mmlop-nolscl": {"lambda_text": 0.0, "lambda_image": 0.0, "lambda_kl": 0.0},
    "mmlop-noudc": {"drift": "off"},
    "mmlop-noshare": {"share_u": "none"},
}


@dataclass
class TrainConfig(_DictMixin):
    """Optimisation settings of one training run (docs/METHOD.md section 5, from IVLP/PromptSRC).

    Raises:
        ConfigError: on any unknown field, wrong type or out-of-range value.
    """

    shots: int | None = 16  # images per class sampled (seeded); None = use all
    epochs: int = 20  # passes over the sampled images (20 base-to-novel, 50 few-shot)
    batch_size: int = 4  # images per step
    lr: float = 0.0025  # peak SGD learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # SGD weight decay (on prompt factors only)
    warmup_epochs: int = 1  # epochs at constant `warmup_lr` before the cosine schedule
    warmup_lr: float = 1e-5  # learning rate during warm-up
    seed: int = 1  # seeds sampling, init, augmentation and shuffling
    augment: bool = True  # random-resized-crop + horizontal flip
    crop_scale_min: float = 0.08  # lower bound of the random-resized-crop area fraction
    crop_small_photos: bool = True  # False: photos smaller than the input: eval view + flip only
    precision: Precision = Precision.AUTO  # autocast dtype on CUDA (CPU always runs fp32)
    max_steps: int | None = None  # stop after this many optimizer steps (budget)
    max_seconds: float | None = None  # stop after this many seconds of training (budget)

    def __post_init__(self) -> None:
        _check_type("shots", self.shots, (int,), optional=True)
        _check_range("shots", self.shots, 1, 100_000)
        for name, hi in (("epochs", 1000), ("batch_size", 4096), ("warmup_epochs", 1000), ("seed", 2**31 - 1)):
            _check_type(name, getattr(self, name), (int,))
            _check_range(name, getattr(self, name), 0 if name in ("epochs", "warmup_epochs", "seed") else 1, hi)
        for name, lo, hi in (("lr", 0.0, 10.0), ("momentum", 0.0, 0.999), ("weight_decay", 0.0, 1.0),
                             ("warmup_lr", 0.0, 10.0), ("crop_scale_min", 0.01, 1.0)):
            _check_type(name, getattr(self, name), (int, float))
            setattr(self, name, _as_float(name, getattr(self, name)))
            _check_range(name, getattr(self, name), lo, hi)
        _check_type("augment", self.augment, (bool,))
        _check_type("crop_small_photos", self.crop_small_photos, (bool,))
        self.precision = _enum(Precision, self.precision, "precision")  # type: ignore[assignment]
        _check_type("max_steps", self.max_steps, (int,), optional=True)
        _check_range("max_steps", self.max_steps, 1, 10**9)
        _check_type("max_seconds", self.max_seconds, (int, float), optional=True)
        _check_range("max_seconds", self.max_seconds, 0.001, 10**7)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Validate a JSON dict of training fields.

        Raises:
            ConfigError: unknown field, wrong type or out-of-range value.
        """
        cls._reject_unknown(data, "train config")
        return cls(**data)


__all__ = ["AdapterConfig", "TrainConfig", "PRESETS", "ShareU", "DriftMode", "TextInit", "LSCLScale", "Precision"]
