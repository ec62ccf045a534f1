"""The `config` form field's flat form: each key maps to exactly one part (issue 12, C.7).

The live-server cases (202 for the flat form, 422 naming the key) are in
tests/hostile/test_inputs.py; this pins the mapping rule itself, including a key that two parts
share, which today's AdapterConfig and TrainConfig do not have.
"""

from __future__ import annotations

import dataclasses

import pytest

from api.config_form import split_config
from api.problem import ProblemError
from mmlop_core import AdapterConfig, TrainConfig


def test_flat_keys_go_to_the_part_that_has_them():
    adapter, train, flat = split_config({"preset": "mmlop", "epochs": 5, "shots": 16, "seed": 1},
                                        {f.name for f in dataclasses.fields(AdapterConfig)},
                                        {f.name for f in dataclasses.fields(TrainConfig)})
    assert adapter == {"preset": "mmlop"} and train == {"epochs": 5, "shots": 16, "seed": 1}
    assert flat == {"preset", "epochs", "shots", "seed"}


def test_the_two_parts_share_no_key():
    """If they ever did, the flat form of that key would be refused (next test)."""
    shared = {f.name for f in dataclasses.fields(AdapterConfig)} & {f.name for f in dataclasses.fields(TrainConfig)}
    assert shared == set()


@pytest.mark.parametrize("data,field,words", [
    ({"seed": 1}, "config.seed", "both"),                        # a key of both parts
    ({"colour": "red"}, "config.colour", "unknown key"),        # a key of neither
    ({"lr": 1, "train": {"lr": 2}}, "config.lr", "twice"),       # flat and nested
    ({"train": [1]}, "config.train", "object"),
])
def test_ambiguous_or_unknown_keys_are_422_naming_them(data, field, words):
    with pytest.raises(ProblemError) as exc:
        split_config(data, {"preset", "seed"}, {"seed", "lr"})
    assert exc.value.status == 422 and exc.value.extra["field"] == field and words in exc.value.detail
