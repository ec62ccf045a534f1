"""Trainer: determinism, callbacks, cancel, budgets, input errors (docs/METHOD.md section 5)."""
from __future__ import annotations

import pytest
import torch
from utils.core import SlowSteps, fashion, quick_adapter, tiny_backbone

import mmlop_core as m
from mmlop_core.config import LSCLScale
from mmlop_core.errors import TimeBudgetExceeded


def test_same_seed_gives_identical_prompts_and_other_seed_differs():
    a, b, c = quick_adapter(seed=3), quick_adapter(seed=3), quick_adapter(seed=4)
    for k, v in a.prompts.state_dict().items():
        assert torch.equal(v, b.prompts.state_dict()[k])
    assert not torch.equal(a.prompts.state_dict()["v_text"], c.prompts.state_dict()["v_text"])
    assert torch.equal(a.class_features, b.class_features)


def test_training_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    quick_adapter(steps=1)
    assert torch.equal(torch.rand(1), expected)


class _Recorder:
    def __init__(self, stop_after=None):
        self.seen, self.stop_after = [], stop_after

    def on_progress(self, p):
        self.seen.append(p)

    def should_stop(self):
        return self.stop_after is not None and len(self.seen) >= self.stop_after


def _train(cb=(), **train):
    images, labels, names = fashion("train")
    keep = [i for i, y in enumerate(labels) if y < 2]
    return m.train_adapter(tiny_backbone(), [images[i] for i in keep], [labels[i] for i in keep], names[:2],
                           m.AdapterConfig(), m.TrainConfig(**{"shots": 4, "epochs": 2, "batch_size": 4, **train}),
                           callbacks=cb)


def test_progress_reports_every_step_with_epoch_step_loss_speed_eta():
    rec = _Recorder()
    adapter = _train([rec])
    assert [p.step for p in rec.seen] == list(range(1, 5))
    assert [p.epoch for p in rec.seen] == [1, 1, 2, 2]
    assert all(p.steps == 4 and p.epochs == 2 and p.loss > 0 and p.images_per_s > 0 for p in rec.seen)
    assert rec.seen[-1].eta_s == 0 and rec.seen[0].eta_s > 0
    assert adapter.metrics["steps"] == 4 and adapter.metrics["train_images"] == 8
    assert adapter.metrics["stopped_early"] is None


def test_callback_cancel_raises_training_canceled():
    with pytest.raises(m.TrainingCanceled, match="canceled at step 2 of 4"):
        _train([_Recorder(stop_after=2)])


def test_step_budget_stops_early_and_says_so():
    adapter = _train(max_steps=3)
    assert adapter.metrics["steps"] == 3 and adapter.metrics["stopped_early"] == "max_steps"


def test_time_budget_stops_at_the_next_step_and_says_so(monkeypatch):
    rec = SlowSteps(100.0, monkeypatch)
    adapter = _train([rec], epochs=50, max_seconds=60.0)  # the text features fit, step 1 does not
    assert [p.step for p in rec.seen] == [1]
    assert adapter.metrics["steps"] == 1 and adapter.metrics["stopped_early"] == "max_seconds"


def test_time_budget_spent_before_the_first_step_is_a_clear_error():
    """A budget the text features (here one chunk: no poll between chunks) already spent fails
    before step 1 instead of training a step past it (a 0.01 s job trained for 7.6 s)."""
    rec = _Recorder()
    with pytest.raises(TimeBudgetExceeded, match=r"max_seconds=0.001.*before training started"):
        _train([rec], epochs=1, shots=1, max_seconds=0.001)
    assert rec.seen == []


def test_zero_shot_preset_trains_nothing():
    images, labels, names = fashion("train")
    adapter = m.train_adapter(tiny_backbone(), images[:4], [0, 0, 1, 1], ["a", "b"],
                              m.AdapterConfig.from_preset("zeroshot"), m.TrainConfig(epochs=5))
    assert adapter.trainable_parameters == 0 and adapter.metrics["steps"] == 0
    assert adapter.class_features.shape == (2, 128)


@pytest.mark.parametrize("labels, names, fragment", [
    ([0, 1], ["a", "b"], "4 images but 2 labels"),
    ([0, 1, 2, 0], ["a", "b"], "label 2 is not a class index"),
    ([0, 1, 1, 0], ["a", "a"], "class name 'a' appears more than once"),
    ([0, 1, 1, 0], ["a", " "], "non-empty strings"),
    ([0, 0, 0, 0], [], "class_names is empty"),
    ([0, 0, 0, 0], ["coat"], "at least two classes"),  # one class: every prediction would be it
])
def test_bad_training_input_is_a_data_error(labels, names, fragment):
    images = fashion("train")[0][:4]
    with pytest.raises(m.DataError) as exc:
        m.train_adapter(tiny_backbone(), images, labels, names, m.AdapterConfig(), m.TrainConfig(epochs=1))
    assert fragment in str(exc.value)


def test_class_name_longer_than_context_is_a_clear_error():
    images = fashion("train")[0][:2]
    with pytest.raises(m.DataError, match="longer than the backbone's 77-token context"):
        m.train_adapter(tiny_backbone(), images, [0, 1], ["coat", "very " * 80], m.AdapterConfig(),
                        m.TrainConfig(epochs=1))


def test_sample_few_shot_is_per_class_and_seeded():
    labels = [0] * 10 + [1] * 3 + [2] * 7
    a = m.sample_few_shot(labels, 4, seed=1)
    assert [labels[i] for i in a].count(0) == 4 and [labels[i] for i in a].count(1) == 3
    assert a == m.sample_few_shot(labels, 4, seed=1) != m.sample_few_shot(labels, 4, seed=2)
    assert m.sample_few_shot(labels, None, seed=1) == list(range(20))


def test_a_backbone_with_non_finite_features_stops_training_with_a_clear_error():
    bb = m.load_backbone(m.TINY_MODEL, "none", seed=0)
    with torch.no_grad():
        bb.model.visual.proj.fill_(float("nan"))
    images, labels, names = fashion("train")
    keep = [i for i, y in enumerate(labels) if y < 2][:4]
    with pytest.raises(m.NonFiniteOutputError, match="backbone produces non-finite features"):
        m.train_adapter(bb, [images[i] for i in keep], [labels[i] for i in keep], names[:2],
                        train=m.TrainConfig(shots=2, epochs=1, max_steps=1, warmup_epochs=0))


@pytest.mark.parametrize("crop_small_photos", [True, False])
def test_crop_small_photos_reaches_the_augmentation(crop_small_photos):
    """The committed photos are 28 px, below the 64 px input: without crops of small photos the
    crop's area bound cannot matter, with them it does."""
    images, labels, names = fashion("train")
    keep = [i for i, y in enumerate(labels) if y < 3]

    def prompts(scale_min: float) -> list[torch.Tensor]:
        train = m.TrainConfig(shots=4, epochs=1, batch_size=4, seed=1, max_steps=3, warmup_epochs=0, lr=0.01,
                              crop_scale_min=scale_min, crop_small_photos=crop_small_photos)
        adapter = m.train_adapter(tiny_backbone(), [images[i] for i in keep], [labels[i] for i in keep], names[:3],
                                  m.AdapterConfig(), train)
        return list(adapter.prompts.state_dict().values())

    same = all(torch.equal(a, b) for a, b in zip(prompts(0.08), prompts(0.9)))
    assert same == (not crop_small_photos)


def test_a_config_changed_after_construction_is_validated_again_by_train_adapter():
    """A fresh user set ``config.lscl_scale = "backbone"`` after construction: it skipped the
    checks and crashed deep in the trainer (AttributeError); a bad value trained silently."""
    images, labels, names = fashion("train")
    keep = [i for i, y in enumerate(labels) if y < 2][:8]
    args = (tiny_backbone(), [images[i] for i in keep], [labels[i] for i in keep], names[:2])
    train = m.TrainConfig(shots=2, epochs=1, max_steps=1)
    config = m.AdapterConfig()
    config.lscl_scale = "backbone"
    assert m.train_adapter(*args, config, train).config.lscl_scale is LSCLScale.BACKBONE
    config.kl_reduction = "sometimes"
    with pytest.raises(m.ConfigError, match="kl_reduction"):
        m.train_adapter(*args, config, train)
    train.crop_small_photos = "yes"
    with pytest.raises(m.ConfigError, match="crop_small_photos"):
        m.train_adapter(*args, m.AdapterConfig(), train)
