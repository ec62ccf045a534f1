"""LSCL (docs/METHOD.md section 3) and UDC (section 4) on hand-computed small tensors."""
from __future__ import annotations

import math

import pytest
import torch

import mmlop_core as m
from utils.core import quick_adapter, tiny_backbone
from mmlop_core.drift import correct_drift, mean_drift
from mmlop_core.losses import lscl_loss


def test_lscl_terms_by_hand():
    logits = torch.tensor([[2.0, 0.0]])
    labels = torch.tensor([0])
    t_hat, t0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    f_hat, f0 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    z0 = torch.tensor([[0.0, 0.0]])
    terms = lscl_loss(logits, labels, t_hat, t0, f_hat, f0, z0, 25.0, 10.0, 1.0)
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))
    text = (0.4 + 0.8 + 0 + 0) / 4
    image = (1 + 1) / 2
    p_hat = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    kl = sum(0.5 * math.log(0.5 / q) for q in p_hat)  # KL(p0 || p_hat) of the one image
    assert math.isclose(terms.ce, ce, rel_tol=1e-6)
    assert math.isclose(terms.text, text, rel_tol=1e-6)
    assert math.isclose(terms.image, image, rel_tol=1e-6)
    assert math.isclose(terms.kl, kl, rel_tol=1e-5)
    assert math.isclose(float(terms.total), ce + 25 * text + 10 * image + kl, rel_tol=1e-5)


def test_zero_weights_reduce_lscl_to_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, requires_grad=True)
    terms = lscl_loss(logits, torch.tensor([0, 1, 2]), torch.randn(4, 8), torch.randn(4, 8), torch.randn(3, 8),
                      torch.randn(3, 8), torch.randn(3, 4), 0.0, 0.0, 0.0)
    assert torch.allclose(terms.total, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])))
    terms.total.backward()
    assert logits.grad is not None


def test_udc_by_hand():
    t_hat = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t0 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    delta = mean_drift(t_hat, t0)
    assert torch.allclose(delta, torch.tensor([0.5, -0.5]))
    corrected = correct_drift(t_hat, delta)
    s = 1 / math.sqrt(2)
    r = 1 / math.sqrt(2.5)
    assert torch.allclose(corrected, torch.tensor([[s, s], [-0.5 * r, 1.5 * r]]), atol=1e-6)
    assert torch.allclose(corrected.norm(dim=-1), torch.ones(2))


def test_udc_changes_the_ranking_only_through_renormalisation():
    torch.manual_seed(0)
    t = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    f = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    delta = torch.randn(8) * 0.5
    unnormalised = (f @ (t - delta).t()).softmax(-1)
    assert torch.allclose(unnormalised, (f @ t.t()).softmax(-1), atol=1e-6)  # same shift for every class
    assert not torch.allclose((f @ correct_drift(t, delta).t()).softmax(-1), (f @ t.t()).softmax(-1), atol=1e-3)


def test_kl_term_per_image_by_default_or_per_logit_as_promptsrc_does():
    """``batchmean`` (default): KL(p0 || p_hat) of each image, averaged over the batch.
    ``numel``: PromptSRC's ``kl_div(log_softmax(z_hat), log_softmax(z0), reduction='sum',
    log_target=True) / z_hat.numel()``, the same value divided by C."""
    torch.manual_seed(0)
    b, c = 3, 7
    z_hat, z0 = torch.randn(b, c) * 5, torch.randn(b, c) * 5
    p0 = z0.softmax(-1)
    per_row = (p0 * (p0.log() - z_hat.log_softmax(-1))).sum(-1)  # KL(p0 || p_hat) per image
    feats = torch.zeros(c, 2)
    args = (z_hat, torch.zeros(b, dtype=torch.long), feats, feats, torch.zeros(b, 2), torch.zeros(b, 2), z0,
            0.0, 0.0, 1.0)
    assert math.isclose(lscl_loss(*args).kl, float(per_row.mean()), rel_tol=1e-5)
    assert math.isclose(lscl_loss(*args, kl_reduction="numel").kl, float(per_row.sum()) / (b * c), rel_tol=1e-5)
    assert math.isclose(lscl_loss(*args, kl_reduction=m.AdapterConfig(kl_reduction="numel").kl_reduction).kl,
                        float(per_row.sum()) / (b * c), rel_tol=1e-5)
    with pytest.raises(m.ConfigError, match="kl_reduction='sum' is not valid"):
        m.AdapterConfig(kl_reduction="sum")


def test_feature_weight_scale_is_one_on_vit_b16_and_follows_s_and_sqrt_d():
    from mmlop_core.losses import feature_weight_scale

    assert feature_weight_scale(100.0, 512) == 1.0
    assert abs(feature_weight_scale(math.exp(4.6052), 512) - 1.0) < 1e-4  # 1.00003: OpenAI ViT-B/16's stored logit scale
    assert feature_weight_scale(50.0, 512) == 0.5  # CE's gradient halves with s
    assert feature_weight_scale(100.0, 128) == 0.5  # an L1 mean's gradient norm doubles at D / 4
    assert abs(feature_weight_scale(23.574, 128) - 0.1179) < 1e-4  # mmlop-tiny/fmnist


@pytest.mark.parametrize("scale", ["backbone", "none"])
def test_training_with_scaled_weights_equals_training_with_the_products_written_out(scale):
    """lscl_scale='backbone' trains exactly as 'none' with lambda_text/lambda_image pre-multiplied
    by (s / 100) sqrt(D / 512); 'none' uses the weights as written (the two runs then differ)."""
    from mmlop_core.losses import feature_weight_scale

    bb = tiny_backbone()
    factor = feature_weight_scale(float(bb.model.logit_scale.exp()), bb.model.text_projection.shape[1])
    assert abs(factor - 1.0) > 0.5  # seeded random tiny CLIP: s = 14.3, D = 128
    scaled = quick_adapter(steps=4, lscl_scale=scale)
    written = quick_adapter(steps=4, lscl_scale="none", lambda_text=25.0 * factor, lambda_image=10.0 * factor)
    same = all(torch.equal(a, b) for a, b in zip(scaled.prompts.state_dict().values(),
                                                  written.prompts.state_dict().values()))
    assert same == (scale == "backbone")


def test_lscl_scale_is_validated():
    with pytest.raises(m.ConfigError, match="lscl_scale"):
        m.AdapterConfig(lscl_scale="sometimes")
    assert m.AdapterConfig().lscl_scale.value == "none"  # the weights as written, until the harness settles it
