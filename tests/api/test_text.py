"""api/text.py's rule and api/bounds.py's JSON parse, without a server: which characters a name
may hold, scrubbing of stored text, repeated member names and lone surrogates named by path."""

from __future__ import annotations

import pytest

from api.bounds import loads_bounded
from api.problem import ProblemError
from api.schemas import AdaptationPublic
from api.text import scrub, unsafe_char


@pytest.mark.parametrize("text", ["a\x00", "a\tb", "\x7f", "\x85", "a\u200bb", "\u202eevil",
                                  "\u2066x\u2069", "\ufeffx", "\u00adx", "a\ud800",
                                  "\U000e0041",
                                  # line/paragraph separators and letters that render blank
                                  # (a fresh user's try: stored as names, they split or
                                  # blank a listing's line)
                                  "a\u2028b", "a\u2029b", "\u3164", "x\u115f", "x\u1160",
                                  "x\uffa0"])
def test_control_format_and_surrogate_characters_are_unsafe(text):
    assert unsafe_char(text) is not None


@pytest.mark.parametrize("text", ["shoes v1", "Schuhe ü", "猫", "👩\u200d💻", "🇫🇷", "a-b_c.d"])
def test_ordinary_text_and_zwj_emoji_are_safe(text):
    assert unsafe_char(text) is None


@pytest.mark.parametrize("raw,field", [
    ('{"a": "1", "a": "2"}', "a"),
    ('{"m": {"k": "1", "k": "2"}}', "m.k"),
    ('[{"x": 1}, {"x": 1, "x": 2}]', "[1].x"),
    ('{"k": "\\ud800"}', "k"),
    ('["ok", "a\\udfffb"]', "[1]"),
    ('{"m": {"\\ud800": "v"}}', "m"),
])
def test_repeated_names_and_lone_surrogates_are_422_naming_the_path(raw, field):
    with pytest.raises(ProblemError) as refused:
        loads_bounded(raw, "")
    assert (refused.value.status, refused.value.extra["field"]) == (422, field)


def test_a_surrogate_pair_escape_is_one_character_and_accepted():
    assert loads_bounded('{"k": "\\ud83d\\ude00"}', "") == {"k": "😀"}


def test_stored_lone_surrogates_are_answered_with_replacement_characters():
    assert scrub({"k\ud800": ["a\udfff", 3]}) == {"k\ufffd": ["a\ufffd", 3]}
    public = AdaptationPublic.model_validate({
        "id": "x", "status": "queued", "name": None, "user_metadata": {"k": "\ud800"},
        "class_names": ["\udfff"], "num_images": 0, "backbone": "b", "pretrained": "p",
        "adapter_config": {}, "train_config": {}, "attempt": 0,
        "created_at": "2026-11-30T00:00:00Z"})
    assert '"k":"\ufffd"' in public.model_dump_json() and "\ufffd" in public.model_dump_json()
