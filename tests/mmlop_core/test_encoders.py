"""docs/METHOD.md section 1 invariants of the prompted encoders."""
from __future__ import annotations

import torch
from utils.core import random_pixels, tiny_backbone

from mmlop_core import AdapterConfig, Predictor
from mmlop_core.encoders import encode_image, encode_text, placeholder_texts, trim_context
from mmlop_core.prompts import LowRankPrompts
from mmlop_core.backbone import weights_hash


def _prompts(preset="mmlop", seed=0, **kw):
    bb = tiny_backbone()
    torch.manual_seed(seed)
    return LowRankPrompts(AdapterConfig.from_preset(preset, **kw), bb.text_width, bb.vision_width,
                          bb.text_layers, bb.vision_layers)


def test_prompting_off_equals_open_clip_text_and_image():
    bb = tiny_backbone()
    tokens = bb.tokenizer(["a photo of a coat.", "trouser", "a very long description of an ankle boot"])
    with torch.no_grad():
        ours, ref = encode_text(bb.model, tokens), bb.model.encode_text(tokens)
        assert ours.dtype == ref.dtype == torch.float32
        assert torch.allclose(ours, ref, atol=1e-6, rtol=0)
        x = random_pixels(3)
        assert torch.allclose(encode_image(bb.model, x), bb.model.encode_image(x), atol=1e-6, rtol=0)


def test_trimmed_context_gives_identical_text_features_with_prompts():
    bb = tiny_backbone()
    tokens = bb.tokenizer(placeholder_texts(["coat", "ankle boot", "t-shirt"], 4))
    short = trim_context(tokens)
    assert short.shape[1] < 20 < tokens.shape[1]
    p = _prompts().text_prompts().detach()
    with torch.no_grad():
        assert torch.allclose(encode_text(bb.model, short, p), encode_text(bb.model, tokens, p), atol=1e-5, rtol=0)


def test_tokens_after_end_of_text_never_influence_features():
    bb = tiny_backbone()
    tokens = trim_context(bb.tokenizer(["X X X X coat.", "X X X X ankle boot."]))
    garbage = tokens.clone()
    eot = tokens.argmax(-1)
    garbage[0, eot[0] + 1:] = 320  # fill the padding of the shorter text with a real word id
    assert not torch.equal(garbage, tokens)
    p = _prompts().text_prompts().detach()
    with torch.no_grad():
        assert torch.allclose(encode_text(bb.model, garbage, p), encode_text(bb.model, tokens, p), atol=1e-6)


def test_prompts_at_every_layer_up_to_depth_change_features():
    bb = tiny_backbone()
    prompts = _prompts("ivlp", text_depth=5, vision_depth=5)
    tp, vp = prompts.text_prompts().detach(), prompts.vision_prompts().detach()
    tokens = trim_context(bb.tokenizer(placeholder_texts(["coat"], 4)))
    x = random_pixels(2)
    with torch.no_grad():
        t_ref, f_ref = encode_text(bb.model, tokens, tp), encode_image(bb.model, x, vp)
        for layer in range(5):
            tp2, vp2 = tp.clone(), vp.clone()
            tp2[layer] += torch.randn_like(tp2[layer])  # not a constant: LayerNorm removes a uniform shift
            vp2[layer] += torch.randn_like(vp2[layer])
            assert not torch.allclose(encode_text(bb.model, tokens, tp2), t_ref, atol=1e-4), layer
            assert not torch.allclose(encode_image(bb.model, x, vp2), f_ref, atol=1e-4), layer


def test_text_placeholders_are_replaced_so_their_word_does_not_matter():
    bb = tiny_backbone()
    p = _prompts().text_prompts().detach()
    with torch.no_grad():
        a = encode_text(bb.model, trim_context(bb.tokenizer(["X X X X coat."])), p)
        b = encode_text(bb.model, trim_context(bb.tokenizer(["Y Y Y Y coat."])), p)
    assert torch.allclose(a, b, atol=1e-6)


def test_per_row_vision_prompts_equal_separate_forwards():
    bb = tiny_backbone()
    p1, p2 = _prompts(seed=1).vision_prompts().detach(), _prompts(seed=2).vision_prompts().detach()
    x = random_pixels(4)
    rows = torch.stack([p1, p2, p2, p1])
    with torch.no_grad():
        mixed = encode_image(bb.model, x, rows)
        sep = torch.stack([encode_image(bb.model, x[i:i + 1], p)[0] for i, p in enumerate([p1, p2, p2, p1])])
    assert torch.allclose(mixed, sep, atol=1e-5)
    assert not torch.allclose(mixed[0], encode_image(bb.model, x[:1], p2)[0], atol=1e-4)


def test_training_and_prediction_never_change_the_backbone():
    from utils.core import quick_adapter, fashion
    bb = tiny_backbone()
    before = weights_hash(bb.model)
    adapter = quick_adapter("mmlop", steps=3)
    Predictor(bb).classify(adapter, fashion("test")[0][:2])
    assert weights_hash(bb.model) == before == bb.weights_hash
    assert all(not p.requires_grad for p in bb.model.parameters())
