"""The ``config`` form field of ``POST /adaptations``: parsing, the flat form, template checks.

Two shapes are accepted, and they may be mixed as long as no key is given twice:

- nested: ``{"adapter": {"preset": "mmlop"}, "train": {"epochs": 5, "shots": 16}}``;
- flat: ``{"preset": "mmlop", "epochs": 5, "shots": 16, "seed": 1}``: each key is a field of
  exactly one of ``AdapterConfig`` and ``TrainConfig`` and goes to that part.

Every refusal is a 422 ``invalid-config`` whose ``field`` names the key as the user wrote it
(``config.epochs`` in the flat form, ``config.train.epochs`` in the nested form).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from api.bounds import loads_bounded
from api.problem import ProblemError
from service.settings import Settings

SECTIONS = ("adapter", "train")


@dataclass
class ParsedConfig:
    """Validated, normalised config parts plus where each key came from.

    Attributes: adapter / train (``to_dict()`` of the validated configs), flat (the keys that
    were given in the flat form).
    """

    adapter: dict[str, Any]
    train: dict[str, Any]
    flat: frozenset[str] = frozenset()

    def field(self, part: str, key: str) -> str:
        """The problem ``field`` for ``key`` of ``part`` ('adapter' or 'train'), as the user wrote it."""
        return f"config.{key}" if key in self.flat else f"config.{part}.{key}"


def _invalid(detail: str, field: str) -> ProblemError:
    return ProblemError(422, detail, kind="invalid-config", field=field)


def split_config(data: dict[str, Any], adapter_fields: Iterable[str],
                 train_fields: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any], frozenset[str]]:
    """Split a (possibly flat) config object into its adapter and train parts.

    ``adapter`` and ``train`` keys are the nested sections; any other key is flat and goes to
    the one part that has a field of that name.

    Returns:
        (adapter part, train part, the flat keys).

    Raises:
        ProblemError: 422 naming ``config.<key>`` for a section that is not an object, a flat key
            of neither part or of both, or a key given both flat and inside its section.
    """
    adapter_fields, train_fields = set(adapter_fields), set(train_fields)
    parts: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        part = data.get(section)
        if part is None:
            part = {}
        if not isinstance(part, dict):
            raise _invalid(f"config.{section} must be a JSON object", f"config.{section}")
        parts[section] = dict(part)
    flat = sorted(set(data) - set(SECTIONS))
    for key in flat:
        owners = [s for s, fields in (("adapter", adapter_fields), ("train", train_fields)) if key in fields]
        if not owners:
            raise _invalid(f"config.{key}: unknown key; adapter keys: {', '.join(sorted(adapter_fields))}; "
                           f"train keys: {', '.join(sorted(train_fields))} (or nest them under "
                           "'adapter' and 'train')", f"config.{key}")
        if len(owners) > 1:
            raise _invalid(f"config.{key} is a key of both 'adapter' and 'train'; nest it under the one "
                           "you mean", f"config.{key}")
        if key in parts[owners[0]]:
            raise _invalid(f"config.{key} is given twice, flat and in config.{owners[0]}; give it once",
                           f"config.{key}")
        parts[owners[0]][key] = data[key]
    return parts["adapter"], parts["train"], frozenset(flat)


def _validate_part(cls: Any, name: str, part: dict[str, Any], where: ParsedConfig) -> dict[str, Any]:
    """``cls.from_dict(part).to_dict()``; a ConfigError is a 422 naming the offending key."""
    from mmlop_core import ConfigError

    try:
        return cls.from_dict(part).to_dict()
    except (ConfigError, TypeError, ValueError) as exc:
        culprit = None
        for key in sorted(part, key=lambda k: k != "preset"):  # the first key wrong on its own
            single = {key: part[key]} if key == "preset" or name == "train" else \
                {"preset": part.get("preset", "mmlop"), key: part[key]}  # preset checked first
            try:
                cls.from_dict(single)
            except (ConfigError, TypeError, ValueError):
                culprit = key
                break
        if culprit is None:  # wrong only with another key (init_words='' with text_init='words'): the one named
            culprit = next((k for k in part if str(exc).startswith(f"{k}=")), None)
        field = where.field(name, culprit) if culprit else f"config.{name}"
        shown = f"config.{culprit}" if culprit in where.flat else f"config.{name}"
        raise _invalid(f"{shown}: {exc}", field) from exc


def parse_config(raw: str | None, settings: Settings) -> ParsedConfig:
    """Validate the ``config`` form field (nested, flat or mixed form; see the module doc).

    Integers outside ``api.bounds.JSON_INT_MAX`` are refused while parsing (naming their key);
    every field is then range-checked by its config class. Also caps ``epochs`` at
    ``settings.job_max_epochs`` and sets ``max_seconds`` to at most
    ``settings.job_max_seconds``.

    Raises:
        ProblemError: 422 ``invalid-config`` naming the field.
    """
    from mmlop_core import AdapterConfig, TrainConfig

    data: Any = loads_bounded(raw, "config", kind="invalid-config") if raw else {}
    if not isinstance(data, dict):
        raise _invalid('config must be a JSON object: {"adapter": {...}, "train": {...}} or flat '
                       '{"preset": "mmlop", "epochs": 5, ...}', "config")
    adapter_fields = {f.name for f in dataclasses.fields(AdapterConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    adapter, train, flat = split_config(data, adapter_fields, train_fields)
    where = ParsedConfig({}, {}, flat)
    where.adapter = _validate_part(AdapterConfig, "adapter", adapter, where)
    where.train = _validate_part(TrainConfig, "train", train, where)
    epochs = where.train.get("epochs")
    if isinstance(epochs, int) and epochs > settings.job_max_epochs:
        field = where.field("train", "epochs")
        raise _invalid(f"{field}: {epochs} is above the limit of {settings.job_max_epochs}", field)
    max_s = where.train.get("max_seconds")
    where.train["max_seconds"] = min(max_s, settings.job_max_seconds) if max_s else settings.job_max_seconds
    return where


def check_init_words(config: ParsedConfig) -> None:
    """With ``text_init='words'`` the adapter's ``init_words`` must fit the text encoder's context.

    They are tokenised on their own, with the start and end tokens (CLIP BPE tokens, as
    :func:`check_template` counts); longer words would fail the job later. Refused at submission.

    Raises:
        ProblemError: 422 ``invalid-config`` naming the init_words field.
    """
    from api.uploads import TEXT_CONTEXT, text_tokens

    if config.adapter.get("text_init") != "words":
        return
    field = config.field("adapter", "init_words")
    used = text_tokens(config.adapter["init_words"]) + 2  # + start and end of text
    if used > TEXT_CONTEXT:
        raise _invalid(f"{field} is {used} text tokens, more than the text encoder's {TEXT_CONTEXT}; "
                       "shorten it (only its first n_ctx tokens are used)", field)


def check_template(config: ParsedConfig, class_names: list[str]) -> None:
    """The adapter's template must fit the text encoder's context with every class name.

    ``template.format(name)`` plus the start and end tokens must fit the 77-token CLIP context
    for the longest name (CLIP BPE tokens, counted on the name as sent: ``_`` counts as a token,
    so this never accepts what the encoder would cut). Refused rather than truncated.

    Raises:
        ProblemError: 422 ``invalid-config`` naming the template field.
    """
    from api.uploads import TEXT_CONTEXT, text_tokens

    template = config.adapter["template"]
    field = config.field("adapter", "template")
    longest = max(class_names, key=lambda n: text_tokens(template.format(n)))
    used = text_tokens(template.format(longest)) + 2  # + start and end of text
    if used > TEXT_CONTEXT:
        raise _invalid(f"{field} with the class name {longest[:60]!r} is {used} text tokens, more than the "
                       f"text encoder's {TEXT_CONTEXT}; shorten the template", field)
