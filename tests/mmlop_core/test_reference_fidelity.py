"""Fidelity to the reference IVLP/PromptSRC code: layer-0 text init and class-name text (issue 9 item 5)."""
from __future__ import annotations

import pytest
import torch

import mmlop_core as m
from mmlop_core.features import frozen_class_features, prompted_class_features, served_class_features
from mmlop_core.trainer import build_prompts
from utils.core import fashion, tiny_backbone


def _word_embeddings(bb: m.Backbone, words: str, n: int) -> torch.Tensor:
    ids = bb.tokenizer([words])[0]
    return bb.model.token_embedding.weight[ids[1:1 + n]]


@pytest.mark.parametrize("preset", ["ivlp", "ivlp+lscl"])
def test_ivlp_layer0_text_prompts_start_as_the_words_a_photo_of_a(preset):
    bb = tiny_backbone()
    torch.manual_seed(3)
    prompts = build_prompts(bb, m.AdapterConfig.from_preset(preset))
    text = prompts.text_prompts().detach()
    assert torch.equal(text[0], _word_embeddings(bb, "a photo of a", 4))
    deeper = text[1:]  # normal(0, 0.02) as in the reference
    assert abs(float(deeper.std()) - 0.02) < 0.002 and abs(float(deeper.mean())) < 0.002


def test_ivlp_with_fewer_tokens_takes_the_first_words_as_the_reference_does():
    bb = tiny_backbone()
    prompts = build_prompts(bb, m.AdapterConfig.from_preset("ivlp", n_ctx=2))
    assert torch.equal(prompts.text_prompts()[0].detach(), _word_embeddings(bb, "a photo of a", 2))


def test_ivlp_with_more_prompt_tokens_than_words_keeps_the_normal_init():
    bb = tiny_backbone()
    torch.manual_seed(0)
    layer0 = build_prompts(bb, m.AdapterConfig.from_preset("ivlp", n_ctx=6)).text_prompts()[0].detach()
    assert layer0.shape == (6, bb.text_width) and abs(float(layer0.std()) - 0.02) < 0.004


def test_random_init_presets_do_not_start_from_words():
    bb = tiny_backbone()
    layer0 = build_prompts(bb, m.AdapterConfig.from_preset("coop")).text_prompts()[0].detach()
    assert not torch.allclose(layer0, _word_embeddings(bb, "a photo of a", 4))


@pytest.mark.parametrize("preset", ["mmlop", "zeroshot"])
def test_underscore_reads_as_a_space_in_every_text_path(preset):
    bb = tiny_backbone()
    cfg = m.AdapterConfig.from_preset(preset)
    prompts = build_prompts(bb, cfg)
    tp = prompts.text_prompts().detach() if cfg.text_depth else None
    under, spaced = ["ankle_boot", "t_shirt", "bag"], ["ankle boot", "t shirt", "bag"]
    assert torch.equal(prompted_class_features(bb, under, cfg, tp), prompted_class_features(bb, spaced, cfg, tp))
    assert torch.equal(frozen_class_features(bb, under, ["a photo of a {}."]),
                       frozen_class_features(bb, spaced, ["a photo of a {}."]))
    assert torch.equal(served_class_features(bb, under, cfg, tp), served_class_features(bb, spaced, cfg, tp))
    # and the two spellings differ without the rule (the test can fail)
    assert not torch.equal(frozen_class_features(bb, ["ankle_boot"], ["{}"]), frozen_class_features(bb, ["ankle"], ["{}"]))


def test_open_vocabulary_labels_keep_the_name_as_given():
    from utils.core import quick_adapter
    adapter = quick_adapter("mmlop", classes=3)
    pred = m.Predictor(tiny_backbone())
    images = fashion("test")[0][:2]
    a = pred.classify(adapter, images, top_k=2, class_names=["ankle_boot", "t_shirt"])
    b = pred.classify(adapter, images, top_k=2, class_names=["ankle boot", "t shirt"])
    assert [p.label for p in a[0]] and {p.label for p in a[0]} <= {"ankle_boot", "t_shirt"}
    assert [p.score for p in a[0]] == [p.score for p in b[0]]


def test_names_that_read_the_same_are_refused_in_training():
    images, labels, _ = fashion("train")
    with pytest.raises(m.DataError, match="'ankle_boot' and 'ankle boot' read the same"):
        m.train_adapter(tiny_backbone(), images[:2], [0, 1], ["ankle_boot", "ankle boot"],
                        train=m.TrainConfig(epochs=1, max_steps=1))


@pytest.mark.parametrize("names", [["Bag", "bag"], ["café", "cafe\u0301"], ["t_shirt", "T shirt"]])
def test_names_that_tokenise_the_same_are_refused_in_training_and_open_vocabulary(names):
    from utils.core import quick_adapter
    images = fashion("train")[0][:2]
    with pytest.raises(m.DataError, match="read the same to the text encoder"):
        m.train_adapter(tiny_backbone(), images, [0, 1], names, train=m.TrainConfig(epochs=1, max_steps=1))
    with pytest.raises(m.DataError, match="read the same to the text encoder"):
        m.Predictor(tiny_backbone()).classify(quick_adapter("mmlop", classes=3), fashion("test")[0][:1],
                                              class_names=[*names, "coat"])


def test_init_words_over_the_text_context_are_a_config_error_naming_them():
    """The words init tokenises init_words alone; too many words used to fail as a DataError
    telling the user to shorten the class name (issue 12 C.6's kind)."""
    with pytest.raises(m.ConfigError, match="init_words="):
        build_prompts(tiny_backbone(), m.AdapterConfig.from_preset("ivlp", init_words=" ".join(["word"] * 100)))
