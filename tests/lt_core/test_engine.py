"""The training engine on one CPU: learning, schedules, DRW / IB phases, NaN stop, checkpoint resume."""

from __future__ import annotations

import math

import pytest
import torch

from lt_core.datasets import load_dataset
from lt_core.engine import (
    EpochShardSampler,
    FitConfig,
    LossSchedule,
    NonFiniteLossError,
    fit,
    load_checkpoint,
    lr_at,
    shard_indices,
)
from lt_core.losses import class_weights
from lt_core.models import create_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits_lt", imbalance_factor=10, seed=0)


def test_fit_on_digits_learns_far_above_chance(digits):
    seen = []
    cfg = FitConfig(model_params={"hidden_sizes": [64]}, epochs=8, batch_size=64, lr=0.1)
    history = fit(cfg, digits, callback=lambda e, m: seen.append((e, m)))
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert history[-1]["accuracy"] > 0.6 and history[-1]["balanced_accuracy"] > 0.5  # chance is 0.1
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    epoch, metrics = seen[-1]
    assert epoch == 8 and len(metrics["per_class_accuracy"]) == 10 and "ece" in metrics
    assert "per_class_accuracy" not in history[-1]  # history keeps scalars only


def test_fit_is_reproducible_and_resume_matches_an_uninterrupted_run(digits, tmp_path):
    cfg = FitConfig(model_params={"hidden_sizes": [32], "dropout": 0.2}, epochs=4, batch_size=64, lr=0.05, seed=3)
    ckpt = tmp_path / "a.pt"
    full = fit(cfg, digits, checkpoint_path=ckpt)
    full_state = torch.load(ckpt, weights_only=False)["model"]
    again = fit(cfg, digits)
    assert [h["train_loss"] for h in again] == [h["train_loss"] for h in full]

    part = tmp_path / "b.pt"
    fit(cfg, digits, checkpoint_path=part, stop_after=2)
    resumed = fit(cfg, digits, checkpoint_path=part, resume_from=part)
    assert [h["epoch"] for h in resumed] == [1, 2, 3, 4]
    resumed_state = torch.load(part, weights_only=False)["model"]
    for k in full_state:
        torch.testing.assert_close(resumed_state[k], full_state[k], rtol=0, atol=0)
    model = create_model("mlp", 10, (64,), hidden_sizes=[32], dropout=0.2)
    assert load_checkpoint(part, model)["epoch"] == 4


def test_non_finite_loss_stops_with_epoch_and_step(digits):
    cfg = FitConfig(model_params={"hidden_sizes": [32]}, epochs=3, lr=1e6, batch_size=64)
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+ step \d+"):
        fit(cfg, digits)


def test_loss_schedule_ib_warmup_and_drw():
    counts = torch.tensor([100, 10, 1])
    cfg = FitConfig(loss="ib", loss_start_epoch=3, reweighting="inverse", reweighting_start_epoch=5, epochs=8)
    s = LossSchedule(cfg, counts)
    assert s.phase(0) == ("ce", False) and s.phase(2) == ("ce", False)
    assert s.phase(3) == ("ib", False) and s.phase(5) == ("ib", True)
    module, needs_features = s.criterion(5)
    assert needs_features and s.criterion(5)[0] is module  # cached
    cfg = FitConfig(loss="ce", reweighting="effective_number", reweighting_beta=0.99, epochs=4)
    s = LossSchedule(cfg, counts)
    assert s.phase(0) == ("ce", True)
    weighted, _ = s.criterion(0)
    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    w = class_weights(counts, scheme="effective_number", beta=0.99)
    expected = (torch.nn.functional.cross_entropy(logits, target, reduction="none") * w[target]).mean()
    torch.testing.assert_close(weighted(logits, target), expected)


def test_lr_schedules():
    step = FitConfig(lr=0.1, epochs=200, schedule="step", milestones=[160, 180], lr_decay=0.01, warmup_epochs=5)
    assert lr_at(step, 0, 0, 10) == pytest.approx(0.1 / 50)
    assert lr_at(step, 4, 9, 10) == pytest.approx(0.1)
    assert lr_at(step, 100, 0, 10) == pytest.approx(0.1)
    assert lr_at(step, 160, 0, 10) == pytest.approx(1e-3)
    assert lr_at(step, 190, 0, 10) == pytest.approx(1e-5)
    cos = FitConfig(lr=0.2, epochs=10, schedule="cosine")
    assert lr_at(cos, 0, 0, 5) == pytest.approx(0.2)
    assert lr_at(cos, 5, 0, 5) == pytest.approx(0.1)
    assert lr_at(cos, 9, 4, 5) < 0.01


def test_shards_cover_exactly_and_the_sampler_is_equal_length():
    n, world = 103, 4
    parts = [shard_indices(n, r, world) for r in range(world)]
    assert sorted(i for p in parts for i in p) == list(range(n))
    samplers = [EpochShardSampler(n, rank=r, world_size=world, seed=1) for r in range(world)]
    lists = [list(s) for s in samplers]
    assert {len(x) for x in lists} == {math.ceil(n / world)}
    assert set().union(*map(set, lists)) == set(range(n))
    for s in samplers:
        s.set_epoch(1)
    assert [list(s) for s in samplers] != lists


def test_bad_config_is_refused():
    with pytest.raises(KeyError, match="unknown loss"):
        FitConfig(loss="nope")
    with pytest.raises(ValueError, match="optimizer"):
        FitConfig(optimizer="rmsprop")


def test_fit_reports_validation_metrics_of_the_validation_split(digits):
    from lt_core.datasets import with_validation
    from lt_core.engine import evaluate

    split = with_validation(digits, 0.4, seed=0)
    cfg = FitConfig(model_params={"hidden_sizes": [32]}, epochs=2, batch_size=64, lr=0.1)
    history = fit(cfg, split)
    scalar_keys = {"accuracy", "balanced_accuracy", "many_shot_accuracy", "few_shot_accuracy", "nll", "ece"}
    assert all(f"val_{k}" in h and k in h for h in history for k in scalar_keys)
    assert history[-1]["val_balanced_accuracy"] != history[-1]["balanced_accuracy"]  # two different splits
    plain = fit(cfg, digits)
    assert "val_accuracy" not in plain[-1]
    # Seeded: the validation figures repeat exactly.
    refit = fit(cfg, with_validation(digits, 0.4, seed=0))
    assert refit[-1]["val_accuracy"] == history[-1]["val_accuracy"]
    # The validation evaluation covers exactly the validation items.
    model = create_model("mlp", 10, (64,), hidden_sizes=[32])
    acc = evaluate(model, torch.utils.data.DataLoader(split.val, batch_size=512), 10)
    assert int(acc.confusion.sum()) == len(split.val) == int(split.val_targets.numel())
