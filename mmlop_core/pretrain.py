"""Contrastive pretraining of the tiny CLIP (`mmlop-tiny`) on Fashion-MNIST's train split.

Why: no pretrained CLIP weights can be fetched on our machines, and a random backbone carries no
knowledge, so LSCL and UDC cannot be observed on it. This recipe makes a small CLIP with a real
(if narrow) image-text prior, the evidence backbone shipped as ``load_backbone("mmlop-tiny",
"fmnist")`` (docs/MODEL_CARD_TINY.md).

Recipe (CLIP, Radford et al. 2021, on open_clip's own parts): the model is
``open_clip.create_model("mmlop-tiny")``; the loss is ``open_clip.loss.ClipLoss`` on L2-normalised
features with the model's learned ``logit_scale``; AdamW with linear warm-up and cosine decay.
Each train photo is rendered once in a domain drawn with the seed (half plain photos, the rest
negative / sketch / blur / rotated / low contrast, :data:`fmnist.PRETRAIN_DOMAINS`); its caption
is redrawn each step from that domain's templates (:data:`fmnist.DOMAIN_CAPTIONS`) filled with a
class-specific synonym, or, at `label_rate`, a label word (a share `loose_rate` of them a
neighbouring class's), or, at `generic_rate`, a word of its group (:mod:`mmlop_core.fmnist`), as
web captions do. The text tower runs on token ids trimmed to the longest caption, exact under the
causal mask (docs/METHOD.md section 1). The test split is never read here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from PIL import Image

from . import fmnist
from .backbone import TINY_MODEL
from .encoders import encode_image, encode_text, trim_context
from .errors import ConfigError, short_repr
from .templates import ensemble_templates

log = logging.getLogger(__name__)


# Allowed range of each numeric PretrainConfig field; its annotation (int or float) gives its kind.
_RANGES: dict[str, tuple[float, float]] = {
    "epochs": (0.01, 1000), "batch_size": (2, 65536), "lr": (1e-7, 1.0), "weight_decay": (0.0, 10.0),
    "warmup_steps": (0, 10**7), "holdout": (0, 59_000), "seed": (0, 2**31 - 1), "threads": (0, 1024),
    "label_rate": (0.0, 1.0), "loose_rate": (0.0, 1.0), "generic_rate": (0.0, 1.0), "eval_every": (0, 10**7),
    "init_logit_scale": (1.0, 100.0), "logit_scale_lr_mult": (0.0, 1000.0)}


@dataclass
class PretrainConfig:
    """Settings of :func:`pretrain_tiny` (defaults = the shipped `fmnist` weights).

    The logit scale is learned as in CLIP, with `logit_scale_lr_mult` times the others' learning
    rate: AdamW moves a parameter by about one learning rate per step, so in this 339-step
    schedule the log-scale could move at most ~0.3 at lr 1e-3: the first shipped weights ended at
    14.9, barely above the initial 14.3, an artefact of the schedule rather than a learned value.
    At 100x it moves freely and ends at 23.57 for the shipped weights (trajectory not recorded;
    MODEL_CARD_TINY.md). Float fields given as ints are stored as floats, so the weights' metadata
    reads the same from the CLI and from Python.

    Raises:
        ConfigError: a value that is not a number, or out of range.
    """

    epochs: float = 1.5  # passes over the training photos (fractions allowed)
    batch_size: int = 256  # photo-caption pairs per step (ClipLoss negatives)
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.1  # AdamW weight decay (not on gains, biases, embeddings, logit scale)
    warmup_steps: int = 100  # linear warm-up steps
    holdout: int = 2000  # train-split photos kept out of training for the zero-shot check
    seed: int = 0  # seeds init, domains, captions and order
    threads: int = 0  # torch CPU threads (0 = torch's default)
    max_steps: int | None = None  # stop after this many steps (smoke tests)
    max_photos: int | None = None  # train on the first N photos after the holdout split (smoke tests)
    label_rate: float = 0.3  # share of captions using a label word ("a photo of a pullover.")
    loose_rate: float = 0.5  # of those, the share using a neighbouring class's label word (fmnist.LOOSE_LABELS)
    generic_rate: float = 0.1  # share naming the photo's group ("a photo of a shoe."); the rest use a synonym
    eval_every: int = 0  # log the holdout zero-shot accuracy every N steps (0 = only at the end)
    init_logit_scale: float = 1 / 0.07  # initial exp(logit_scale) (CLIP's); learned, clamped at 100
    logit_scale_lr_mult: float = 100.0  # the logit scale's learning rate over the others' (class docstring)

    def __post_init__(self) -> None:
        kinds = {f.name: f.type for f in fields(self)}  # "int" or "float" (postponed annotations)
        for name, (lo, hi) in _RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name}={short_repr(value)} must be a number")
            if kinds[name] == "int" and not isinstance(value, int):
                raise ConfigError(f"{name}={short_repr(value)} must be an integer")
            if not lo <= value <= hi:
                raise ConfigError(f"{name}={short_repr(value)} is out of range; allowed {lo} to {hi}")
            if kinds[name] == "float":
                setattr(self, name, float(value))
        for name in ("max_steps", "max_photos"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name}={short_repr(value)} must be a positive integer or None")


@dataclass
class PretrainProgress:
    """One report per step: step (1-based), steps (planned), loss (ClipLoss), pairs_per_s, eta_s (seconds)."""

    step: int
    steps: int
    loss: float
    pairs_per_s: float
    eta_s: float


class RenderedPhotos:
    """Train photos rendered once at the model's input size, with their domain and class.

    Attributes:
        pixels: uint8 (N, S, S) grayscale, resized bicubic like the backbone's eval transform.
        labels: LongTensor (N,) class index.
        captions: LongTensor (K, L) token ids of every (domain, template, word, class) caption.
        choices: per kind of word ("label", "loose", "generic", "synonym"), per photo, the
            LongTensor of its caption rows (its domain's templates filled with that kind's words).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, tokenizer, seed: int,
                 label_rate: float = 1.0, generic_rate: float = 0.0, loose_rate: float = 0.0) -> None:
        rng = random.Random(seed)
        self.label_rate, self.generic_rate, self.loose_rate = label_rate, generic_rate, loose_rate
        domains, weights = zip(*fmnist.PRETRAIN_DOMAINS.items())
        drawn = rng.choices(domains, weights=weights, k=len(images))
        self.pixels = torch.from_numpy(np.stack([
            np.asarray(fmnist.apply_domain(im, d, rng).resize((size, size), Image.Resampling.BICUBIC))
            for im, d in zip(images, drawn)]))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        texts, rows = [], {}
        for d in domains:
            for c, name in enumerate(fmnist.CLASS_NAMES):
                for kind, words in (("label", (name,)), ("loose", fmnist.LOOSE_LABELS[name]),
                                    ("generic", fmnist.GENERIC_NAMES[name]),
                                    ("synonym", fmnist.SYNONYMS[name])):
                    captions = [t.format(w) for w in words for t in fmnist.DOMAIN_CAPTIONS[d]]
                    rows[kind, d, c] = torch.arange(len(texts), len(texts) + len(captions))
                    texts.extend(captions)
        self.captions = trim_context(tokenizer(texts))
        self.choices = {kind: [rows[kind, d, int(y)] for d, y in zip(drawn, labels)]
                        for kind in ("label", "loose", "generic", "synonym")}
        self.domain_counts = {d: drawn.count(d) for d in domains}

    def __len__(self) -> int:
        return len(self.labels)

    def caption_tokens(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One caption per photo in `idx`: LongTensor (B, L).

        A domain template filled with the label word (probability `label_rate`; of those, a share
        `loose_rate` takes a neighbouring class's label word, :data:`fmnist.LOOSE_LABELS`), a word of its
        group (`generic_rate`, :data:`fmnist.GENERIC_NAMES`) or else a synonym
        (:data:`fmnist.SYNONYMS`).
        """
        draws = torch.rand(len(idx), generator=gen).tolist()
        loose = (torch.rand(len(idx), generator=gen) < self.loose_rate).tolist()
        picks = []
        for i, u, lo in zip(idx.tolist(), draws, loose):
            kind = "label" if u < self.label_rate else ("generic" if u < self.label_rate + self.generic_rate
                                                        else "synonym")
            kind = "loose" if kind == "label" and lo else kind
            rows = self.choices[kind][i]
            picks.append(int(rows[torch.randint(len(rows), (1,), generator=gen)]))
        tokens = self.captions[picks]
        return trim_context(tokens)


def normalize_pixels(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, S, S) grayscale -> FloatTensor (B, 3, S, S), CLIP-normalised like the eval transform."""
    x = pixels.float().div_(255).unsqueeze(1).expand(-1, 3, -1, -1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _param_groups(model: torch.nn.Module, weight_decay: float, logit_scale_lr_mult: float) -> list[dict]:
    """AdamW groups: decay on matrices only (open_clip_train's `exclude` rule); the logit scale alone,
    its learning rate `logit_scale_lr_mult` times the others' (key ``lr_mult``)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if name == "logit_scale":
            continue
        excluded = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "embedding" in name
        (no_decay if excluded else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr_mult": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0},
            {"params": [model.logit_scale], "weight_decay": 0.0, "lr_mult": logit_scale_lr_mult}]


def _lr(step: int, steps: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, steps - config.warmup_steps)
    return 0.5 * config.lr * (1 + math.cos(math.pi * (step - config.warmup_steps) / span))


@torch.no_grad()
def zero_shot_accuracy(model: torch.nn.Module, tokenizer, pixels: torch.Tensor, labels: torch.Tensor,
                       mean: Sequence[float], std: Sequence[float], templates: Sequence[str],
                       class_names: Sequence[str] = fmnist.CLASS_NAMES, batch_size: int = 500) -> float:
    """Top-1 zero-shot accuracy with a template ensemble (CLIP's prompt ensembling).

    Args:
        pixels: uint8 (N, S, S) grayscale photos at the model's input size.
        labels: LongTensor (N,).
        templates: prompt templates with one ``{}``; per class the L2-normalised text features of
            all templates are averaged and renormalised.

    Returns:
        Accuracy in [0, 1] (float).
    """
    model.eval()
    texts = [t.format(c) for c in class_names for t in templates]
    text = F.normalize(encode_text(model, trim_context(tokenizer(texts))).float(), dim=-1)
    classes = F.normalize(text.view(len(class_names), len(templates), -1).mean(1), dim=-1)  # (C, D)
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = normalize_pixels(pixels[start:start + batch_size], mean, std)
        f = F.normalize(encode_image(model, x).float(), dim=-1)
        correct += int(((f @ classes.t()).argmax(-1) == labels[start:start + batch_size]).sum())
    return correct / max(len(labels), 1)


def _split(images: np.ndarray, labels: np.ndarray, holdout: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(labels))
    held, kept = order[:holdout], order[holdout:]
    return images[kept], labels[kept], images[held], labels[held]


def pretrain_tiny(out: str | Path, config: PretrainConfig | None = None, data_dir: str | Path = fmnist.DEFAULT_DIR,
                  on_progress: Callable[[PretrainProgress], None] | None = None) -> dict:
    """Pretrain `mmlop-tiny` from scratch and write its weights as one fp16 safetensors file.

    Args:
        out: path of the ``.safetensors`` file to write (parent folders are created).
        config: recipe settings (default :class:`PretrainConfig`).
        data_dir: folder of Fashion-MNIST's IDX files (only the train split is read).
        on_progress: called after every step with a :class:`PretrainProgress`.

    Returns:
        Metrics (JSON-serialisable): steps, seconds, pairs_per_s, final_loss, holdout zero-shot
        accuracy with the 60-template ensemble, the learned logit scale (exp, fp32 before the fp16
        cast), file bytes and sha256, and the config.

    Raises:
        DataError: the Fashion-MNIST files are missing or malformed.
        ConfigError: bad settings.
    """
    from safetensors.torch import save_file

    config = config or PretrainConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=None)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(config.init_logit_scale))
    tokenizer = open_clip.get_tokenizer(TINY_MODEL)
    size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, (tuple, list))
               else model.visual.image_size)
    mean, std = model.visual.image_mean or open_clip.OPENAI_DATASET_MEAN, \
        model.visual.image_std or open_clip.OPENAI_DATASET_STD
    images, labels = fmnist.read_split("train", data_dir)
    train_x, train_y, held_x, held_y = _split(images, labels, config.holdout, config.seed)
    if config.max_photos is not None:
        train_x, train_y = train_x[:config.max_photos], train_y[:config.max_photos]
    data = RenderedPhotos(train_x, train_y, size, tokenizer, config.seed, config.label_rate, config.generic_rate,
                          config.loose_rate)
    held = torch.from_numpy(np.stack([np.asarray(Image.fromarray(im, "L").resize((size, size),
                                      Image.Resampling.BICUBIC)) for im in held_x]))
    steps_per_epoch = max(1, len(data) // config.batch_size)
    steps = max(1, int(config.epochs * steps_per_epoch))
    if config.max_steps is not None:
        steps = min(steps, config.max_steps)
    templates = ensemble_templates("a photo of a {}.", True)  # the 60-template zero-shot check
    groups = _param_groups(model, config.weight_decay, config.logit_scale_lr_mult)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = ClipLoss()
    model.train()
    start, step, loss = time.perf_counter(), 0, float("nan")
    while step < steps:
        order = torch.randperm(len(data), generator=gen)
        for b in range(steps_per_epoch):
            if step >= steps:
                break
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = _lr(step, steps, config) * group["lr_mult"]
            image_features = F.normalize(encode_image(model, normalize_pixels(data.pixels[idx], mean, std)), dim=-1)
            text_features = F.normalize(encode_text(model, data.caption_tokens(idx, gen)), dim=-1)
            total = loss_fn(image_features, text_features, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            with torch.no_grad():  # CLIP clamps the temperature at 100
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            loss = float(total.detach())
            if config.eval_every and step % config.eval_every == 0 and len(held_y):
                acc = zero_shot_accuracy(model, tokenizer, held, torch.from_numpy(held_y), mean, std,
                                         templates)
                model.train()
                log.warning("step %d: holdout zero-shot top-1 %.3f", step, acc)
            if on_progress is not None:
                elapsed = time.perf_counter() - start
                on_progress(PretrainProgress(step=step, steps=steps, loss=loss,
                                             pairs_per_s=step * config.batch_size / max(elapsed, 1e-9),
                                             eta_s=elapsed / step * (steps - step)))
    seconds = time.perf_counter() - start
    model.eval()
    held_acc = zero_shot_accuracy(model, tokenizer, held, torch.from_numpy(held_y), mean, std, templates) \
        if len(held_y) else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    # one metadata entry: safetensors writes a metadata map in a per-process random order, so
    # several keys would make the bytes (and the sha256) of a seeded run differ between runs
    save_file(state, str(out), metadata={"mmlop": json.dumps({"model": TINY_MODEL, "recipe": "mmlop_core.pretrain",
                                                              "config": asdict(config)}, sort_keys=True)})
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    log.info("pretrained %s: %d steps in %.0f s, holdout zero-shot %.3f", TINY_MODEL, step, seconds, held_acc or 0)
    return {"model": TINY_MODEL, "steps": step, "seconds": round(seconds, 1),
            "pairs_per_s": round(step * config.batch_size / max(seconds, 1e-9), 1), "final_loss": loss,
            "holdout_zero_shot_top1": held_acc, "holdout_photos": int(len(held_y)),
            "domains": data.domain_counts, "file": str(out), "bytes": out.stat().st_size, "sha256": digest,
            "config": asdict(config), "threads": torch.get_num_threads(),
            "logit_scale": round(float(model.logit_scale.detach().exp()), 4)}


__all__ = ["PretrainConfig", "PretrainProgress", "pretrain_tiny", "zero_shot_accuracy", "normalize_pixels"]
