"""Generic few-shot training loop for an adapter.

SGD with momentum and weight decay on the prompt factors only, a constant warm-up then a cosine
schedule, random-resized-crop + flip, autocast on CUDA (MMLOP.md section 5, from IVLP/PromptSRC's
trainers); loss = LSCL (section 3). Reports through callbacks (minGPT's trainer pattern): the
Celery task's progress and cancel checks are one such callback.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.nn.functional as F
from PIL import Image

from .adapter import Adapter
from .backbone import Backbone
from .config import AdapterConfig, Precision, TextInit, TrainConfig
from .data import BatchAugment, sample_few_shot
from .encoders import encode_image
from .errors import DataError, NonFiniteOutputError, TimeBudgetExceeded, TrainingCanceled
from .features import (check_names_read_apart, frozen_class_features, prompted_class_features, served_class_features,
                       tokenize)
from .images import to_rgb
from .losses import lscl_loss
from .prompts import LowRankPrompts
from .templates import ensemble_templates

log = logging.getLogger(__name__)


@dataclass
class TrainProgress:
    """One progress report (after every optimizer step).

    Attributes: epoch (1-based), epochs, step (1-based, global), steps (planned total),
    loss (float, this step), images_per_s (since start), eta_s (seconds, remaining steps at the
    mean step time).
    """

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    images_per_s: float
    eta_s: float


class TrainCallback(Protocol):
    """Optional hooks; either may be absent on a callback object."""

    def on_progress(self, progress: TrainProgress) -> None: ...

    def should_stop(self) -> bool: ...


def _validate(images: Sequence[Image.Image], labels: Sequence[int], class_names: Sequence[str]) -> None:
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels; give one label per image")
    if not class_names:
        raise DataError("class_names is empty; give at least two classes")
    if len(class_names) < 2:  # the softmax over one class is 1.0 for every image
        raise DataError(f"only one class ({str(class_names[0])[:60]!r}); give at least two classes")
    names = [n.strip() if isinstance(n, str) else n for n in class_names]
    if any(not isinstance(n, str) or not n for n in names):
        raise DataError("class names must be non-empty strings")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"class name {dup!r} appears more than once")
    bad = [y for y in labels if not (isinstance(y, int) and 0 <= y < len(class_names))]
    if bad:
        raise DataError(f"label {bad[0]!r} is not a class index in [0, {len(class_names)})")


def _autocast(device: torch.device, precision: Precision):
    if device.type != "cuda" or precision is Precision.FP32:
        return contextlib.nullcontext()
    dtype = torch.float16 if precision is Precision.FP16 else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def _lr_at(step: int, warmup_steps: int, total_steps: int, train: TrainConfig) -> float:
    """Constant `warmup_lr` for the warm-up steps, then cosine from `lr` to 0."""
    if step < warmup_steps:
        return train.warmup_lr
    span = max(1, total_steps - warmup_steps)
    return 0.5 * train.lr * (1 + math.cos(math.pi * (step - warmup_steps) / span))


def build_prompts(backbone: Backbone, config: AdapterConfig) -> LowRankPrompts:
    """Freshly initialised prompts for `backbone` (uses the global torch RNG).

    With ``text_init='words'`` the layer-0 text prompts start from the token embeddings of the
    first n_ctx tokens of ``init_words`` (full rank: copied, as the reference IVLP/PromptSRC
    ``IndependentVL`` prompt learner does with "a photo of a"; low rank: their rank-r SVD fit).
    When ``init_words`` has fewer than n_ctx tokens they keep the normal init (the reference's
    fallback for n_ctx > 4).
    """
    prompts = LowRankPrompts(config, backbone.text_width, backbone.vision_width,
                             backbone.text_layers, backbone.vision_layers)
    if config.text_init is TextInit.WORDS:
        tokens = tokenize(backbone, [config.init_words]).cpu()
        words = tokens[0, 1:int(tokens[0].argmax())]  # ids between start and end of text
        if len(words) >= config.n_ctx:  # reference IVLP: `if ctx_init and n_ctx <= 4`, else random
            with torch.no_grad():
                emb = backbone.model.token_embedding.weight[words[:config.n_ctx].to(backbone.device)]
            prompts.fit_text_layer0(emb.cpu())
        else:
            log.info("init_words %r has %d tokens < n_ctx=%d: layer-0 text prompts keep the normal init",
                     config.init_words, len(words), config.n_ctx)
    return prompts.to(backbone.device)


def train_adapter(backbone: Backbone, images: Sequence[Image.Image], labels: Sequence[int],
                  class_names: Sequence[str], config: AdapterConfig | None = None,
                  train: TrainConfig | None = None, callbacks: Sequence[object] = ()) -> Adapter:
    """Train an MMLoP adapter on labelled few-shot images.

    Args:
        backbone: frozen backbone (never modified).
        images: PIL images, any mode (converted to RGB).
        labels: class index per image, in [0, C).
        class_names: C distinct names.
        config: adapter shape/regularisation (default: `mmlop` preset).
        train: optimisation settings (default :class:`TrainConfig`); `shots` samples per class
            with `seed`; `max_steps`/`max_seconds` cut the run short (recorded in metrics).
            `max_seconds` counts from this call, the class text features included.
        callbacks: objects with optional ``on_progress(TrainProgress)`` and ``should_stop()``;
            ``should_stop`` is also polled between chunks of the text features.

    Returns:
        :class:`Adapter` with served class features (UDC applied) and metrics: ``steps``,
        ``seconds``, ``images_per_s``, ``final_loss``, ``train_accuracy`` (last epoch),
        ``train_images``, ``stopped_early`` (None, ``"max_steps"`` or ``"max_seconds"``).

    Raises:
        DataError: inconsistent images/labels/class names.
        ConfigError: a depth beyond the backbone's blocks.
        TrainingCanceled: a callback's ``should_stop()`` returned True.
        TimeBudgetExceeded: `max_seconds` ran out computing the text features, before step 1.
    """
    started = time.perf_counter()
    config = config or AdapterConfig()
    train = train or TrainConfig()
    class_names = [n.strip() for n in class_names]
    _validate(images, labels, class_names)
    check_names_read_apart(backbone, class_names)
    device = backbone.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(train.seed)
        prompts = build_prompts(backbone, config)
        chosen = sample_few_shot(labels, train.shots, train.seed)
        rgb = [to_rgb(images[i]) for i in chosen]
        targets = torch.tensor([labels[i] for i in chosen], dtype=torch.long)
        frozen_text = frozen_class_features(backbone, class_names,
                                            ensemble_templates(config.template, config.ensemble_templates),
                                            between_chunks=_text_phase_check(train, callbacks, started))
        left = None if train.max_seconds is None else max(train.max_seconds - (time.perf_counter() - started), 0.001)
        metrics, image_drift = _fit(backbone, config, train if left is None else replace(train, max_seconds=left),
                                    prompts, rgb, targets, class_names, frozen_text, callbacks)
    text_prompts = prompts.text_prompts().detach() if config.text_depth else None
    class_features = served_class_features(backbone, class_names, config, text_prompts, frozen=frozen_text)
    prompts = prompts.cpu().requires_grad_(False)
    return Adapter(config=config, class_names=class_names, prompts=prompts,
                   class_features=class_features.cpu(),
                   image_drift=None if image_drift is None else image_drift.cpu(),
                   backbone=backbone.describe(), metrics=metrics, train_config=train.to_dict())


def _text_phase_check(train: TrainConfig, callbacks: Sequence[object], started: float):
    """Called between text-feature chunks: stop when a callback asks, or the budget is spent."""
    stops = [cb.should_stop for cb in callbacks if hasattr(cb, "should_stop")]

    def check(done: int, total: int, classes: int) -> None:
        if any(stop() for stop in stops):
            raise TrainingCanceled(f"training canceled while computing text features ({done} of {total} texts)")
        if train.max_seconds is not None and time.perf_counter() - started >= train.max_seconds:
            raise TimeBudgetExceeded(f"the time budget (max_seconds={train.max_seconds:g}) ran out computing the "
                                     f"text features of {classes} classes ({done} of {total} texts), before "
                                     "training started; use fewer classes or a larger budget")
    return check


def _fit(backbone: Backbone, config: AdapterConfig, train: TrainConfig, prompts: LowRankPrompts,
         rgb: list[Image.Image], targets: torch.Tensor, class_names: list[str], frozen_text: torch.Tensor,
         callbacks: Sequence[object]) -> tuple[dict, torch.Tensor | None]:
    """The optimisation loop; returns (metrics, image drift)."""
    model, device = backbone.model, backbone.device
    n = len(rgb)
    steps_per_epoch = math.ceil(n / train.batch_size)
    total_steps = steps_per_epoch * train.epochs if config.prompted else 0
    if train.max_steps is not None:
        total_steps = min(total_steps, train.max_steps)
    metrics: dict = {"train_images": n, "steps": 0, "seconds": 0.0, "images_per_s": 0.0,
                     "final_loss": None, "train_accuracy": None, "stopped_early": None,
                     "trainable_parameters": prompts.trainable_parameters}
    if total_steps == 0:
        return metrics, None
    augment = BatchAugment(rgb, backbone.preprocess, backbone.image_size, train.crop_scale_min, train.augment, device)
    optimizer = torch.optim.SGD(prompts.parameters(), lr=train.lr, momentum=train.momentum,
                                weight_decay=train.weight_decay)
    warmup_steps = min(train.warmup_epochs * steps_per_epoch, total_steps - 1) if train.warmup_epochs else 0
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and train.precision is Precision.FP16 else None
    logit_scale = model.logit_scale.exp().float()
    targets = targets.to(device)
    start, step, seen = time.perf_counter(), 0, 0
    drift_sum, correct = None, 0
    hooks_progress = [cb.on_progress for cb in callbacks if hasattr(cb, "on_progress")]
    hooks_stop = [cb.should_stop for cb in callbacks if hasattr(cb, "should_stop")]
    for epoch in range(1, train.epochs + 1):
        order = torch.randperm(n)
        drift_sum, drift_count, correct = None, 0, 0
        for b in range(steps_per_epoch):
            idx = order[b * train.batch_size:(b + 1) * train.batch_size]
            x = augment(idx)  # (B, 3, H, W)
            y = targets[idx.to(device)]
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, warmup_steps, total_steps, train)
            with _autocast(device, train.precision):
                text_prompts = prompts.text_prompts() if config.text_depth else None
                vision_prompts = prompts.vision_prompts() if config.vision_depth else None
                t_hat = prompted_class_features(backbone, class_names, config, text_prompts)  # (C, D)
                f_hat = F.normalize(encode_image(model, x, vision_prompts).float(), dim=-1)  # (B, D)
                with torch.no_grad():
                    f0 = F.normalize(encode_image(model, x).float(), dim=-1)  # (B, D)
            logits = logit_scale * f_hat @ t_hat.t()  # (B, C)
            frozen_logits = logit_scale * f0 @ frozen_text.t()
            terms = lscl_loss(logits, y, t_hat, frozen_text, f_hat, f0, frozen_logits,
                              config.lambda_text, config.lambda_image, config.lambda_kl)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(terms.total).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                terms.total.backward()
                optimizer.step()
            with torch.no_grad():
                delta = (f_hat - f0).sum(dim=0)
                drift_sum = delta if drift_sum is None else drift_sum + delta
                drift_count += len(idx)
                correct += int((logits.argmax(dim=-1) == y).sum())
            step += 1
            seen += len(idx)
            elapsed = time.perf_counter() - start
            loss = float(terms.total.detach())
            if not math.isfinite(loss):
                if not (bool(torch.isfinite(f0).all()) and bool(torch.isfinite(frozen_text).all())):
                    raise NonFiniteOutputError(f"training stopped at step {step}: the backbone produces non-finite "
                                               f"features (NaN or infinity), so its weights are corrupt")
                raise DataError(f"training diverged at step {step} (loss={loss}); lower lr (now {train.lr})")
            progress = TrainProgress(epoch=epoch, epochs=train.epochs, step=step, steps=total_steps, loss=loss,
                                     images_per_s=seen / max(elapsed, 1e-9),
                                     eta_s=elapsed / step * (total_steps - step))
            for hook in hooks_progress:
                hook(progress)
            if any(hook() for hook in hooks_stop):
                raise TrainingCanceled(f"training canceled at step {step} of {total_steps}")
            metrics.update(steps=step, seconds=elapsed, images_per_s=progress.images_per_s, final_loss=loss)
            stop = "max_steps" if step >= total_steps and train.max_steps is not None and step < steps_per_epoch * train.epochs else None
            if train.max_seconds is not None and elapsed >= train.max_seconds and step < total_steps:
                stop = "max_seconds"
            if stop or step >= total_steps:
                metrics["stopped_early"] = stop
                break
        metrics["train_accuracy"] = correct / max(drift_count, 1)
        if metrics["stopped_early"] or step >= total_steps:
            break
    log.info("trained %d steps in %.1f s (%.1f images/s)", step, metrics["seconds"], metrics["images_per_s"])
    return metrics, drift_sum / max(drift_count, 1)
