"""Low-rank prompt factors (docs/METHOD.md section 2)."""
from __future__ import annotations

import pytest
import torch

from mmlop_core import AdapterConfig, ConfigError
from mmlop_core.prompts import LowRankPrompts


def test_shapes_and_rank_of_each_layer_prompt():
    torch.manual_seed(0)
    p = LowRankPrompts(AdapterConfig(rank=2), 32, 48)
    tp, vp = p.text_prompts(), p.vision_prompts()
    assert tp.shape == (9, 4, 32) and vp.shape == (9, 4, 48) and tp.dtype == torch.float32
    assert all(torch.linalg.matrix_rank(tp[i]) <= 2 for i in range(9))
    assert torch.linalg.matrix_rank(LowRankPrompts(AdapterConfig(rank=None), 32, 48).text_prompts()[0]) == 4


def test_shared_u_couples_modalities():
    torch.manual_seed(0)
    p = LowRankPrompts(AdapterConfig(rank=1), 32, 48)
    with torch.no_grad():
        p.u[3].mul_(2.0)
    tp, vp = p.text_prompts(), p.vision_prompts()
    # both modalities' layer-3 prompts are projections of the same token codes u[3]
    ratio_t = tp[3][:, 0] / p.v_text[3, 0, 0]
    ratio_v = vp[3][:, 0] / p.v_vision[3, 0, 0]
    assert torch.allclose(ratio_t, ratio_v, atol=1e-5) and torch.allclose(ratio_t, p.u[3, :, 0], atol=1e-5)


def test_init_std_of_prompt_entries():
    torch.manual_seed(0)
    p = LowRankPrompts(AdapterConfig(rank=4, init_std=0.02), 512, 768)
    assert 0.015 < float(p.vision_prompts().detach().std()) < 0.025


def test_words_init_is_best_rank_r_fit():
    torch.manual_seed(0)
    emb = torch.randn(4, 32)
    p = LowRankPrompts(AdapterConfig(rank=2), 32, 48)
    p.fit_text_layer0(emb)
    u, s, vh = torch.linalg.svd(emb, full_matrices=False)
    best = (u[:, :2] * s[:2]) @ vh[:2]
    assert torch.allclose(p.text_prompts()[0], best, atol=1e-5)
    full = LowRankPrompts(AdapterConfig(rank=None), 32, 48)
    full.fit_text_layer0(emb)
    assert torch.equal(full.text_prompts()[0], emb)
    with pytest.raises(ConfigError, match="expected \\(4, 32\\)"):
        p.fit_text_layer0(torch.randn(3, 32))
