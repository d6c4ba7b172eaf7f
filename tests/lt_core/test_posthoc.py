"""Post-hoc logit adjustment and tau-normalisation: the grid, tau = 0 is the raw model, the choice on validation."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from lt_core.datasets import load_dataset, with_validation
from lt_core.engine import FitConfig, fit
from lt_core.metrics import EvalAccumulator
from lt_core.posthoc import POSTHOC_METRICS, TAUS, PosthocAccumulator, adjust_logits, choose, log_prior


def test_grid_at_tau_zero_equals_the_raw_metrics_exactly():
    data = with_validation(load_dataset("digits_lt", imbalance_factor=20, seed=0), 0.5, seed=0)
    seen = []
    cfg = FitConfig(model_params={"hidden_sizes": [32]}, epochs=3, batch_size=64, lr=0.1)
    fit(cfg, data, callback=lambda e, m: seen.append(m))
    assert TAUS == (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    for m in seen:
        grid = m["posthoc"]
        assert set(grid["test"]) == {"logit_adjustment", "tau_norm"}  # the MLP's head is an nn.Linear
        for method in grid["test"]:
            for name in POSTHOC_METRICS:
                assert grid["test"][method][0][name] == m[name], (method, name)
                assert grid["val"][method][0][name] == m[f"val_{name}"], (method, name)
        # the chosen variant is the best on validation, reported on test
        method, tau = m["posthoc_method"], m["posthoc_tau"]
        i = TAUS.index(tau)
        assert m["val_posthoc_balanced_accuracy"] == max(
            r["balanced_accuracy"] for g in grid["val"].values() for r in g
        )
        assert m["posthoc_balanced_accuracy"] == grid["test"][method][i]["balanced_accuracy"]
    # On a 20x imbalanced split the adjustment must move some prediction away from the raw model at tau = 2.
    last = seen[-1]["posthoc"]["test"]["logit_adjustment"]
    assert last[-1] != last[0]


def test_adjustments_follow_their_formulas():
    torch.manual_seed(0)
    counts = [100, 10, 1]
    logits = torch.randn(32, 3)
    prior = log_prior(counts)
    assert torch.allclose(prior.exp(), torch.tensor([100, 10, 1]) / 111.0)
    assert torch.equal(adjust_logits(logits, "logit_adjustment", 0.0, prior=prior), logits)
    assert torch.allclose(adjust_logits(logits, "logit_adjustment", 1.5, prior=prior), logits - 1.5 * prior)
    head = nn.Linear(4, 3)
    features = torch.randn(32, 4)
    w = head.weight.detach()
    expected = F.linear(features, w / w.norm(dim=1, keepdim=True), head.bias.detach())
    assert torch.allclose(adjust_logits(head(features), "tau_norm", 1.0, head=head), expected, atol=1e-6)
    # The accumulator counts exactly the argmax of each variant.
    target = torch.randint(0, 3, (32,))
    acc = PosthocAccumulator(3, counts, head, taus=(0.0, 1.0))
    z = head(features).detach()
    acc.update(z, target, features)
    pred = (z - prior).argmax(1)
    manual = torch.bincount(target * 3 + pred, minlength=9).view(3, 3)
    assert torch.equal(acc.confusion[0, 1], manual)
    pred = adjust_logits(z, "tau_norm", 1.0, head=head).argmax(1)  # the grid counts what predict computes
    assert torch.equal(acc.confusion[1, 1], torch.bincount(target * 3 + pred, minlength=9).view(3, 3))
    raw = EvalAccumulator(3)
    raw.update(z, target)
    assert torch.equal(acc.confusion[0, 0], raw.confusion) and torch.equal(acc.confusion[1, 0], raw.confusion)


def test_choice_is_made_on_validation_and_ties_keep_the_raw_model():
    flat = [{"balanced_accuracy": 0.5} for _ in TAUS]
    assert choose({"logit_adjustment": flat}, "balanced_accuracy") == ("logit_adjustment", 0.0)
    better = [dict(r) for r in flat]
    better[3]["balanced_accuracy"] = 0.7
    norm = [dict(r) for r in flat]
    norm[5]["balanced_accuracy"] = 0.9
    assert choose({"logit_adjustment": better, "tau_norm": flat}, "balanced_accuracy") == ("logit_adjustment", 0.75)
    assert choose({"logit_adjustment": better, "tau_norm": norm}, "balanced_accuracy") == ("tau_norm", 1.25)
    assert choose(
        {"logit_adjustment": better, "tau_norm": norm}, "balanced_accuracy", methods=("logit_adjustment",)
    ) == (
        "logit_adjustment",
        0.75,
    )
