"""Class (text) features: frozen template ensembles, prompted features, and served features."""
from __future__ import annotations

import unicodedata
from collections.abc import Callable, Generator
from typing import TypeVar

import torch
import torch.nn.functional as F

from .backbone import Backbone
from .config import AdapterConfig, DriftMode
from .drift import correct_drift, mean_drift
from .encoders import encode_text, placeholder_texts, trim_context
from .errors import DataError
from .templates import ensemble_templates

T = TypeVar("T")

_TEXT_CHUNK = 1024  # texts per frozen forward, bounds memory for large class lists


def text_name(class_name: str) -> str:
    """The class name as the text encoder reads it: ``_`` becomes a space.

    CoOp / IVLP / PromptSRC do the same in their ``PromptLearner`` (``name.replace("_", " ")``)
    before tokenising, so ``"ankle_boot"`` (a folder name) and ``"ankle boot"`` give the same
    text features. Labels shown to users keep the name as given.
    """
    return class_name.replace("_", " ")


def check_class_names(backbone: Backbone, class_names: list[str]) -> None:
    """The checks every class list passes before its names reach the text encoder.

    Used for trained classes and open-vocabulary lists alike (issue 12, A.1): names are
    non-empty strings once stripped, distinct, free of control characters (a NUL or a newline
    would reach the tokenizer), and do not read the same to the text encoder
    (:func:`check_names_read_apart`). A name too long for the text context is refused when it
    is tokenised (:func:`tokenize`).

    Raises:
        DataError: naming the first offending entry.
    """
    if not class_names:
        raise DataError("no class names; give at least one")
    seen: set[str] = set()
    for n, name in enumerate(class_names):
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"class name [{n}] {name!r} is empty or not a string")
        if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
            raise DataError(f"class name [{n}] {name[:60]!r} holds control characters")
        if name in seen:
            raise DataError(f"class name [{n}] {name[:60]!r} appears more than once")
        seen.add(name)
    check_names_read_apart(backbone, class_names)


def check_names_read_apart(backbone: Backbone, class_names: list[str]) -> None:
    """Refuse class names that reach the text encoder as the same token ids.

    CLIP's tokenizer lowercases and cleans text and :func:`text_name` reads ``_`` as a space, so
    ``"Bag"``/``"bag"`` or ``"ankle_boot"``/``"ankle boot"`` would be two classes with identical
    text features, each scoring half.

    Raises:
        DataError: naming the first two names that collide.
    """
    rows = backbone.tokenizer([text_name(n) for n in class_names]).tolist()
    seen: dict[tuple[int, ...], int] = {}
    for i, row in enumerate(rows):
        first = seen.setdefault(tuple(row), i)
        if first != i:
            raise DataError(f"class names {class_names[first]!r} and {class_names[i]!r} read the same to the text "
                            f"encoder (case, '_' and spacing are ignored); rename one")


def tokenize(backbone: Backbone, texts: list[str]) -> torch.Tensor:
    """Token ids trimmed to the longest text: LongTensor (N, L) on the backbone's device.

    Raises:
        DataError: a text is longer than the backbone's context (the class name is too long).
    """
    tokens = backbone.tokenizer(texts)  # (N, context)
    eot = tokens.argmax(dim=-1)
    too_long = eot == tokens.shape[1] - 1  # open_clip truncates and puts EOT last
    if bool(too_long.any()):
        bad = texts[int(too_long.nonzero()[0])]
        raise DataError(f"text {bad[:80]!r} is longer than the backbone's {tokens.shape[1]}-token context; shorten the class name")
    return trim_context(tokens).to(backbone.device)


@torch.no_grad()
def frozen_class_features(backbone: Backbone, class_names: list[str], templates: list[str],
                          between_chunks: Callable[[int, int, int], None] | None = None) -> torch.Tensor:
    """t0: frozen text features averaged over `templates` (docs/METHOD.md section 3).

    Each template's features are L2-normalised, averaged over templates, and renormalised
    (CLIP's zero-shot ensembling). Computed once per job, not per step. Names pass through
    :func:`text_name` (``_`` -> space).

    Args:
        between_chunks: called as ``(texts done, texts in all, classes)`` before every chunk of
            ``_TEXT_CHUNK`` texts but the first (the trainer's cancel and time-budget checks);
            whatever it raises propagates.

    Returns:
        FloatTensor (C, D), fp32, unit rows, on the backbone's device.
    """
    texts = [t.format(text_name(name)) for name in class_names for t in templates]
    feats = []
    for start in range(0, len(texts), _TEXT_CHUNK):
        if start and between_chunks is not None:
            between_chunks(start, len(texts), len(class_names))
        tokens = tokenize(backbone, texts[start:start + _TEXT_CHUNK])
        feats.append(F.normalize(encode_text(backbone.model, tokens).float(), dim=-1))
    per_text = torch.cat(feats).view(len(class_names), len(templates), -1)
    return F.normalize(per_text.mean(dim=1), dim=-1)


def prompted_class_features(backbone: Backbone, class_names: list[str], config: AdapterConfig,
                            text_prompts: torch.Tensor | None) -> torch.Tensor:
    """t_hat: class features through the prompted text encoder (grad flows into the prompts).

    With text prompts the texts are ``"X X X X {name}."`` (placeholders replaced); without
    them (vision-only or zero-shot presets) the dataset template is used. Names pass through
    :func:`text_name` (``_`` -> space).

    Returns:
        FloatTensor (C, D), fp32, unit rows.
    """
    if text_prompts is not None and text_prompts.shape[0] > 0:
        tokens = tokenize(backbone, placeholder_texts([text_name(n) for n in class_names], config.n_ctx))
        return F.normalize(encode_text(backbone.model, tokens, text_prompts).float(), dim=-1)
    tokens = tokenize(backbone, [config.template.format(text_name(name)) for name in class_names])
    return F.normalize(encode_text(backbone.model, tokens).float(), dim=-1)


def served_class_features_steps(backbone: Backbone, class_names: list[str], config: AdapterConfig,
                                text_prompts: torch.Tensor | None, texts_per_step: int = 256,
                                frozen: torch.Tensor | None = None) -> Generator[None, None, torch.Tensor]:
    """:func:`served_class_features` cut into steps of at most about `texts_per_step` texts.

    A generator: each ``next()`` runs the text encoder on one chunk of class names (the prompted
    texts and, with text-side UDC, their template ensemble) and yields; the generator's return
    value (``StopIteration.value``) is the (C, D) result. A server drives it one step at a
    time on its model thread, so a long open-vocabulary list never holds that thread for more
    than one step and other tenants' image batches run in between (issue 12, A.1). The text
    encoder treats every row on its own (causal mask, context trimmed per chunk), and the drift
    delta is a mean over all classes taken after the last chunk, so the result equals the
    unchunked computation up to float rounding.

    Args:
        texts_per_step: texts per encoder call; a chunk holds at least one class name.
        frozen: t0 for `class_names` if already computed (else computed here when needed).

    Yields:
        None after each chunk.

    Returns:
        FloatTensor (C, D), fp32, unit rows, on the backbone's device.

    Raises:
        DataError: a name does not fit the text context.
    """
    udc = config.drift in (DriftMode.TEXT, DriftMode.BOTH)
    templates = ensemble_templates(config.template, config.ensemble_templates) if udc and frozen is None else []
    per_name = 1 + len(templates)
    step = max(1, texts_per_step // per_name)
    prompted, frozen_parts = [], []
    for start in range(0, len(class_names), step):
        names = class_names[start:start + step]
        with torch.no_grad():
            prompted.append(prompted_class_features(backbone, names, config, text_prompts))
            if templates:
                frozen_parts.append(frozen_class_features(backbone, names, templates))
        yield
    feats = torch.cat(prompted)
    if not udc:
        return feats
    t0 = frozen if frozen is not None else torch.cat(frozen_parts)
    return correct_drift(feats, mean_drift(feats, t0))


def run_steps(steps: Generator[None, None, T]) -> T:
    """Run a step generator (e.g. :func:`served_class_features_steps`) to its end; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


@torch.no_grad()
def served_class_features(backbone: Backbone, class_names: list[str], config: AdapterConfig,
                          text_prompts: torch.Tensor | None,
                          frozen: torch.Tensor | None = None) -> torch.Tensor:
    """Class features used at inference: t_hat with text-side UDC when configured (section 4).

    Args:
        frozen: t0 for `class_names` if already computed (else computed here when needed).

    Returns:
        FloatTensor (C, D), fp32, unit rows.
    """
    return run_steps(served_class_features_steps(backbone, class_names, config, text_prompts,
                                                 texts_per_step=_TEXT_CHUNK, frozen=frozen))
