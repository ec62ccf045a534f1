"""Generic few-shot training loop for an adapter.

SGD with momentum and weight decay on the prompt factors only, a constant warm-up then a cosine
schedule, random-resized-crop + flip, autocast on CUDA (docs/METHOD.md section 5, from IVLP/PromptSRC's
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
from .config import AdapterConfig, LSCLScale, Precision, TextInit, TrainConfig
from .data import BatchAugment, sample_few_shot
from .encoders import encode_image
from .errors import ConfigError, DataError, NonFiniteOutputError, TimeBudgetExceeded, TrainingCanceled
from .features import (check_names_read_apart, frozen_class_features, prompted_class_features, served_class_features,
                       tokenize)
from .images import to_rgb
from .losses import feature_weight_scale, lscl_loss
from .predictor import Predictor
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
        try:
            tokens = tokenize(backbone, [config.init_words]).cpu()
        except DataError:  # tokenize's message blames a class name
            raise ConfigError(f"init_words={config.init_words[:60]!r}... is longer than the backbone's text context; "
                              f"shorten it (only its first n_ctx={config.n_ctx} tokens are used)") from None
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
            `max_seconds` counts from this call, the class text features included; it is
            checked between text chunks, once more before step 1 (spent: TimeBudgetExceeded)
            and after every step (spent: stop, ``stopped_early="max_seconds"``). A step is never
            interrupted, so a run overshoots the budget by at most one step, plus the served
            class features; held-out scoring stops at the budget.
        callbacks: objects with optional ``on_progress(TrainProgress)`` and ``should_stop()``;
            ``should_stop`` is also polled between chunks of the text features.

    Returns:
        :class:`Adapter` with served class features (UDC applied) and metrics: ``steps``,
        ``seconds``, ``images_per_s``, ``final_loss``, ``train_accuracy`` (last epoch),
        ``train_images``, ``stopped_early`` (None, ``"max_steps"`` or ``"max_seconds"``), and
        held-out validation on the images not sampled as shots (see :func:`_held_out_metrics`):
        ``val_images`` (int, 0 when `shots` took every image), ``val_accuracy`` (float in
        [0, 1], or None) and ``val_recall`` ({class name: float in [0, 1], or None for a class
        with no held-out image}, or None), plus ``val_stopped_early="max_seconds"`` when
        `max_seconds` ran out while scoring. All values are JSON-serialisable.

    Raises:
        DataError: inconsistent images/labels/class names.
        ConfigError: a depth beyond the backbone's blocks, or a field of `config`/`train` set to a bad
            value after construction (both are validated again here, on copies).
        TrainingCanceled: a callback's ``should_stop()`` returned True (polled after every step
            and before every validation batch too).
        TimeBudgetExceeded: `max_seconds` ran out before step 1 (checked between the text
            feature chunks and once after them).
    """
    started = time.perf_counter()
    # copies, validated again: a field set after construction (config.lscl_scale = "backbone") skipped the checks
    config = replace(config) if config is not None else AdapterConfig()
    train = replace(train) if train is not None else TrainConfig()
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
        templates = ensemble_templates(config.template, config.ensemble_templates)
        text_check = _text_phase_check(train, callbacks, started)
        frozen_text = frozen_class_features(backbone, class_names, templates, between_chunks=text_check)
        texts = len(class_names) * len(templates)
        text_check(texts, texts, len(class_names))  # a budget already spent fails before step 1
        left = None if train.max_seconds is None else max(train.max_seconds - (time.perf_counter() - started), 0.001)
        metrics, image_drift = _fit(backbone, config, train if left is None else replace(train, max_seconds=left),
                                    prompts, rgb, targets, class_names, frozen_text, callbacks)
    text_prompts = prompts.text_prompts().detach() if config.text_depth else None
    class_features = served_class_features(backbone, class_names, config, text_prompts, frozen=frozen_text)
    prompts = prompts.cpu().requires_grad_(False)
    adapter = Adapter(config=config, class_names=class_names, prompts=prompts,
                      class_features=class_features.cpu(),
                      image_drift=None if image_drift is None else image_drift.cpu(),
                      backbone=backbone.describe(), metrics=metrics, train_config=train.to_dict())
    picked = set(chosen)
    held_out = [i for i in range(len(images)) if i not in picked]
    deadline = None if train.max_seconds is None else started + train.max_seconds
    metrics.update(_held_out_metrics(backbone, adapter, [images[i] for i in held_out],
                                     [labels[i] for i in held_out], callbacks, deadline))
    return adapter


_VAL_BATCH = 64  # held-out images per vision forward


def _held_out_metrics(backbone: Backbone, adapter: Adapter, images: Sequence[Image.Image], labels: Sequence[int],
                      callbacks: Sequence[object], deadline: float | None = None) -> dict:
    """Accuracy and per-class recall of the trained `adapter` on held-out `images` (issue 12 E.22).

    Scored as served: eval preprocessing (resize + centre crop) and :meth:`Predictor.logits`
    (prompted vision forward, class features with UDC, image drift when configured), in batches
    of 64 under ``no_grad``; the predicted class is the arg-max logit. Images are scored
    round-robin over the classes, so a run cut short by `deadline` still covers every class.

    Args:
        images: the job's images that were not sampled as shots (any PIL mode).
        labels: their class indices in [0, C).
        callbacks: ``should_stop()`` is checked before each batch.
        deadline: ``time.perf_counter()`` value after which no further batch is scored.

    Returns:
        ``val_images`` (int, images scored), ``val_accuracy`` (float in [0, 1], None when
        nothing was scored), ``val_recall`` ({class name: float in [0, 1], None for a class
        with no scored image}, None when nothing was scored) and, only when the deadline cut
        scoring short, ``val_stopped_early="max_seconds"``.

    Raises:
        TrainingCanceled: a callback's ``should_stop()`` returned True.
    """
    metrics: dict = {"val_images": 0, "val_accuracy": None, "val_recall": None}
    if not images:
        return metrics
    seen: dict[int, int] = {}
    keys = []  # (k-th image of its class, class, index): sorting interleaves the classes
    for i, y in enumerate(labels):
        keys.append((seen.get(y, 0), y, i))
        seen[y] = seen.get(y, 0) + 1
    order = [i for _, _, i in sorted(keys)]
    stops = [cb.should_stop for cb in callbacks if hasattr(cb, "should_stop")]
    predictor = Predictor(backbone, text_cache_size=1)
    predicted = []
    for start in range(0, len(order), _VAL_BATCH):
        if any(hook() for hook in stops):
            raise TrainingCanceled(f"training canceled during validation ({start} of {len(images)} images scored)")
        if deadline is not None and time.perf_counter() >= deadline:
            metrics["val_stopped_early"] = "max_seconds"
            break
        pixels = predictor.pixels([images[i] for i in order[start:start + _VAL_BATCH]])  # (b, 3, H, W)
        predicted.append(predictor.logits(adapter, pixels).argmax(dim=-1).cpu())  # (b,)
    if not predicted:
        return metrics
    pred = torch.cat(predicted)  # (n,)
    y = torch.tensor([labels[i] for i in order[:len(pred)]], dtype=torch.long)  # (n,)
    hit = (pred == y).float()
    recall = {name: float(hit[y == c].mean()) if bool((y == c).any()) else None
              for c, name in enumerate(adapter.class_names)}
    return {**metrics, "val_images": len(pred), "val_accuracy": float(hit.mean()), "val_recall": recall}


def _text_phase_check(train: TrainConfig, callbacks: Sequence[object], started: float):
    """Called between text-feature chunks: stop when a callback asks, or the budget is spent."""
    stops = [cb.should_stop for cb in callbacks if hasattr(cb, "should_stop")]

    def check(done: int, total: int, classes: int) -> None:
        if any(stop() for stop in stops):
            raise TrainingCanceled(f"training canceled while computing text features ({done} of {total} texts)")
        if train.max_seconds is not None and time.perf_counter() - started >= train.max_seconds:
            raise TimeBudgetExceeded(f"the time budget (max_seconds={train.max_seconds:.3g}) ran out computing the "
                                     f"text features of {classes} classes ({done} of {total} texts), before "
                                     "training started; use fewer classes or a larger budget")
    return check


def _fit(backbone: Backbone, config: AdapterConfig, train: TrainConfig, prompts: LowRankPrompts,
         rgb: list[Image.Image], targets: torch.Tensor, class_names: list[str], frozen_text: torch.Tensor,
         callbacks: Sequence[object]) -> tuple[dict, torch.Tensor | None]:
    """The optimisation loop; returns (metrics, image drift FloatTensor (D,) or None)."""
    return _FitLoop(backbone, config, train, prompts, class_names, frozen_text, callbacks).run(rgb, targets)


@dataclass
class _EpochStats:
    """Per-epoch sums: image drift (sum of f_hat - f0, (D,)), rows seen and rows classified right."""

    drift_sum: torch.Tensor | None = None
    count: int = 0
    correct: int = 0

    @torch.no_grad()
    def add(self, f_hat: torch.Tensor, f0: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        delta = (f_hat - f0).sum(dim=0)  # (D,)
        self.drift_sum = delta if self.drift_sum is None else self.drift_sum + delta
        self.count += len(y)
        self.correct += int((logits.argmax(dim=-1) == y).sum())

    @property
    def drift(self) -> torch.Tensor | None:
        return None if self.drift_sum is None else self.drift_sum / max(self.count, 1)


class _FitLoop:
    """One run of the optimisation loop in named steps (nanoGPT/minGPT style).

    `run` -> `_prepare` (augmentation, optimizer, scaler) -> `_epoch` per epoch -> per batch
    `_step` (augment, LSCL forward, backward, update) then `_after_step` (finite check, callbacks,
    budgets). Draws from the global torch RNG in this order: per epoch one ``randperm``, per step
    the augmentation's draws.
    """

    def __init__(self, backbone: Backbone, config: AdapterConfig, train: TrainConfig, prompts: LowRankPrompts,
                 class_names: list[str], frozen_text: torch.Tensor, callbacks: Sequence[object]) -> None:
        self.backbone, self.config, self.train, self.prompts = backbone, config, train, prompts
        self.class_names, self.frozen_text = class_names, frozen_text  # frozen_text: (C, D)
        self.hooks_progress = [cb.on_progress for cb in callbacks if hasattr(cb, "on_progress")]
        self.hooks_stop = [cb.should_stop for cb in callbacks if hasattr(cb, "should_stop")]
        self.step = self.seen = 0
        self.start = 0.0

    def _plan(self, n: int) -> None:
        """Step counts: per epoch, in all (after `max_steps`; 0 without prompts), warm-up."""
        train = self.train
        self.n = n
        self.steps_per_epoch = math.ceil(n / train.batch_size)
        self.total_steps = self.steps_per_epoch * train.epochs if self.config.prompted else 0
        if train.max_steps is not None:
            self.total_steps = min(self.total_steps, train.max_steps)
        self.warmup_steps = (min(train.warmup_epochs * self.steps_per_epoch, self.total_steps - 1)
                             if train.warmup_epochs else 0)

    def run(self, rgb: list[Image.Image], targets: torch.Tensor) -> tuple[dict, torch.Tensor | None]:
        """Train on `rgb` with class indices `targets` (LongTensor (N,)); returns (metrics, drift)."""
        self._plan(len(rgb))
        self.metrics: dict = {"train_images": self.n, "steps": 0, "seconds": 0.0, "images_per_s": 0.0,
                              "final_loss": None, "train_accuracy": None, "stopped_early": None,
                              "trainable_parameters": self.prompts.trainable_parameters}
        if self.total_steps == 0:
            return self.metrics, None
        self._prepare(rgb, targets)
        drift = None
        for epoch in range(1, self.train.epochs + 1):
            drift, done = self._epoch(epoch)
            if done:
                break
        log.info("trained %d steps in %.1f s (%.1f images/s)", self.step, self.metrics["seconds"],
                 self.metrics["images_per_s"])
        return self.metrics, drift

    def _prepare(self, rgb: list[Image.Image], targets: torch.Tensor) -> None:
        """Augmentation, SGD on the prompt factors only, fp16 loss scaler (CUDA + fp16 only), LSCL feature weights."""
        backbone, train, device = self.backbone, self.train, self.backbone.device
        self.augment = BatchAugment(rgb, backbone.preprocess, backbone.image_size, train.crop_scale_min,
                                    train.augment, device, crop_small=train.crop_small_photos)
        self.optimizer = torch.optim.SGD(self.prompts.parameters(), lr=train.lr, momentum=train.momentum,
                                         weight_decay=train.weight_decay)
        self.scaler = (torch.amp.GradScaler("cuda")
                       if device.type == "cuda" and train.precision is Precision.FP16 else None)
        self.logit_scale = backbone.model.logit_scale.exp().float()
        factor = (feature_weight_scale(float(self.logit_scale), self.frozen_text.shape[-1])
                  if self.config.lscl_scale is LSCLScale.BACKBONE else 1.0)
        self.lambda_text, self.lambda_image = self.config.lambda_text * factor, self.config.lambda_image * factor
        if self.config.lambda_text or self.config.lambda_image:
            log.info("LSCL feature weights %.4g (text) and %.4g (image): %s x %.4f (lscl_scale=%s)",
                     self.lambda_text, self.lambda_image, (self.config.lambda_text, self.config.lambda_image),
                     factor, self.config.lscl_scale.value)
        self.targets = targets.to(device)
        self.start = time.perf_counter()

    def _epoch(self, epoch: int) -> tuple[torch.Tensor | None, bool]:
        """One shuffled pass; returns (this epoch's mean image drift (D,), whether training is over)."""
        order = torch.randperm(self.n)
        stats = _EpochStats()
        done = False
        for b in range(self.steps_per_epoch):
            idx = order[b * self.train.batch_size:(b + 1) * self.train.batch_size]
            loss, f_hat, f0, logits, y = self._step(idx)
            stats.add(f_hat, f0, logits, y)
            self.step += 1
            self.seen += len(idx)
            done = self._after_step(epoch, loss, f0)
            if done:
                break
        self.metrics["train_accuracy"] = stats.correct / max(stats.count, 1)
        return stats.drift, done or self.step >= self.total_steps

    def _step(self, idx: torch.Tensor):
        """One optimizer step on rows `idx` (LongTensor (B,)).

        Returns (total loss (scalar), f_hat (B, D), f0 (B, D), logits (B, C), labels (B,)).
        """
        model, config, device = self.backbone.model, self.config, self.backbone.device
        x = self.augment(idx)  # (B, 3, H, W)
        y = self.targets[idx.to(device)]
        for group in self.optimizer.param_groups:
            group["lr"] = _lr_at(self.step, self.warmup_steps, self.total_steps, self.train)
        with _autocast(device, self.train.precision):
            text_prompts = self.prompts.text_prompts() if config.text_depth else None
            vision_prompts = self.prompts.vision_prompts() if config.vision_depth else None
            t_hat = prompted_class_features(self.backbone, self.class_names, config, text_prompts)  # (C, D)
            f_hat = F.normalize(encode_image(model, x, vision_prompts).float(), dim=-1)  # (B, D)
            with torch.no_grad():
                f0 = F.normalize(encode_image(model, x).float(), dim=-1)  # (B, D)
        logits = self.logit_scale * f_hat @ t_hat.t()  # (B, C)
        frozen_logits = self.logit_scale * f0 @ self.frozen_text.t()
        terms = lscl_loss(logits, y, t_hat, self.frozen_text, f_hat, f0, frozen_logits,
                          self.lambda_text, self.lambda_image, config.lambda_kl, config.kl_reduction)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(terms.total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            terms.total.backward()
            self.optimizer.step()
        return terms.total, f_hat, f0, logits, y

    def _after_step(self, epoch: int, total: torch.Tensor, f0: torch.Tensor) -> bool:
        """Finite check, progress and stop callbacks, metrics, budgets; returns whether to stop."""
        elapsed = time.perf_counter() - self.start
        loss = float(total.detach())
        self._check_finite(loss, f0)
        progress = TrainProgress(epoch=epoch, epochs=self.train.epochs, step=self.step, steps=self.total_steps,
                                 loss=loss, images_per_s=self.seen / max(elapsed, 1e-9),
                                 eta_s=elapsed / self.step * (self.total_steps - self.step))
        for hook in self.hooks_progress:
            hook(progress)
        if any(hook() for hook in self.hooks_stop):
            raise TrainingCanceled(f"training canceled at step {self.step} of {self.total_steps}")
        self.metrics.update(steps=self.step, seconds=elapsed, images_per_s=progress.images_per_s, final_loss=loss)
        stop = self._budget_stop(time.perf_counter() - self.start)  # the callbacks' time counts too
        if stop or self.step >= self.total_steps:
            self.metrics["stopped_early"] = stop
            return True
        return False

    def _check_finite(self, loss: float, f0: torch.Tensor) -> None:
        """NonFiniteOutputError when the frozen features are non-finite, else DataError (divergence)."""
        if math.isfinite(loss):
            return
        if not (bool(torch.isfinite(f0).all()) and bool(torch.isfinite(self.frozen_text).all())):
            raise NonFiniteOutputError(f"training stopped at step {self.step}: the backbone produces non-finite "
                                       f"features (NaN or infinity), so its weights are corrupt")
        raise DataError(f"training diverged at step {self.step} (loss={loss}); lower lr (now {self.train.lr})")

    def _budget_stop(self, elapsed: float) -> str | None:
        """``"max_steps"`` when a step budget cut the planned run short, ``"max_seconds"`` past the time budget."""
        train, step = self.train, self.step
        stop = ("max_steps" if step >= self.total_steps and train.max_steps is not None
                and step < self.steps_per_epoch * train.epochs else None)
        if train.max_seconds is not None and elapsed >= train.max_seconds and step < self.total_steps:
            stop = "max_seconds"
        return stop
