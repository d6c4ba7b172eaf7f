"""Each loss against a naive per-sample loop of its equation (value and gradient), and the identities."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from losses_testutils import (
    LOSS_NAMES,
    naive_balanced_softmax,
    naive_cdt,
    naive_ce,
    naive_focal,
    naive_ib,
    naive_label_smoothing,
    naive_ldam,
    naive_logit_adjusted,
    naive_seql,
    tol,
)
from torch import Tensor

import lt_core.losses as L

N, K = 7, 5
COUNTS = torch.tensor([500, 0, 120, 30, 4])  # long-tailed, with an empty class (clamped to 1)


def _inputs(seed: int = 0, scale: float = 3.0) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(N, K, generator=gen, dtype=torch.float64) * scale).requires_grad_()
    target = torch.randint(0, K, (N,), generator=gen)
    target[:K] = torch.arange(K)  # every class appears, the empty one included
    features = torch.randn(N, 4, generator=gen, dtype=torch.float64).requires_grad_()
    return logits, target, features


def _seql_beta(target: Tensor, lambda_: float, gamma: float, seed: int) -> Tensor:
    """The Bernoulli draws (N, K) that seql_loss makes with a generator seeded at ``seed``.

    Only the draws on tail, non-target elements matter (the formula multiplies beta by [f_k < lambda] (1 - y)), and
    those are what ``drop_mask`` returns for the tail the formula defines.
    """
    counts = COUNTS.double().clamp_min(1)
    tail = counts / counts.sum() < lambda_
    return L.drop_mask(tail, target, gamma, torch.Generator().manual_seed(seed)).to(torch.float64)


# Non-default parameters, so that every term of each formula is exercised.
PARAMS: dict[str, dict[str, float]] = {
    "ce": {},
    "focal": {"gamma": 2.0},
    "label_smoothing": {"epsilon": 0.2},
    "seql": {"lambda_": 0.3, "gamma": 0.5},
    "ib": {"alpha": 10.0, "epsilon": 0.01},
    "ib_focal": {"alpha": 10.0, "epsilon": 0.01, "gamma": 1.5},
    "cdt": {"gamma": 0.3},
    "ldam": {"max_margin": 0.4, "scale": 5.0},
    "balanced_softmax": {},
    "logit_adjusted": {"tau": 0.7},
}
SEQL_SEED = 3


def library(name: str, z: Tensor, y: Tensor, h: Tensor, **extra: object) -> Tensor:
    """The functional form of ``name`` with ``PARAMS[name]``, per sample."""
    info = L.LOSSES[name]
    kwargs: dict[str, object] = {**PARAMS[name], "reduction": "none", **extra}
    if info.needs_class_counts:
        kwargs["class_counts"] = COUNTS
    if info.needs_features:
        kwargs["features"] = h
    if name == "seql":
        kwargs["generator"] = torch.Generator().manual_seed(SEQL_SEED)
    return getattr(L, f"{name}_loss")(z, y, **kwargs)


NAIVE: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "ce": lambda z, y, h: naive_ce(z, y),
    "focal": lambda z, y, h: naive_focal(z, y, 2.0),
    "label_smoothing": lambda z, y, h: naive_label_smoothing(z, y, 0.2),
    "seql": lambda z, y, h: naive_seql(z, y, COUNTS, 0.3, _seql_beta(y, 0.3, 0.5, SEQL_SEED)),
    "ib": lambda z, y, h: naive_ib(z, y, h, COUNTS, 10.0, 0.01),
    "ib_focal": lambda z, y, h: naive_ib(z, y, h, COUNTS, 10.0, 0.01, gamma=1.5),
    "cdt": lambda z, y, h: naive_cdt(z, y, COUNTS, 0.3),
    "ldam": lambda z, y, h: naive_ldam(z, y, COUNTS, 0.4, 5.0),
    "balanced_softmax": lambda z, y, h: naive_balanced_softmax(z, y, COUNTS),
    "logit_adjusted": lambda z, y, h: naive_logit_adjusted(z, y, COUNTS, 0.7),
}


def test_every_registered_loss_has_a_reference() -> None:
    assert sorted(NAIVE) == sorted(PARAMS) == LOSS_NAMES


def _value_and_grads(fn: Callable[..., Tensor], seed: int) -> tuple[Tensor, Tensor, Tensor | None]:
    logits, target, features = _inputs(seed)
    loss = fn(logits, target, features)
    # a random cotangent, so that the gradient of every sample counts with its own weight
    cotangent = torch.rand(N, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    (loss * cotangent).sum().backward()
    return loss.detach(), logits.grad, features.grad


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_matches_naive_loop(name: str, seed: int) -> None:
    value, grad_logits, grad_features = _value_and_grads(lambda z, y, h: library(name, z, y, h), seed)
    ref_value, ref_grad_logits, ref_grad_features = _value_and_grads(NAIVE[name], seed)
    torch.testing.assert_close(value, ref_value, **tol(torch.float64))
    torch.testing.assert_close(grad_logits, ref_grad_logits, **tol(torch.float64))
    if name in ("ib", "ib_focal"):  # the influence factor is not detached: features get the naive gradient
        torch.testing.assert_close(grad_features, ref_grad_features, **tol(torch.float64))
        assert grad_features.abs().sum() > 0


@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.95])  # both ways of drawing beta (sparse and dense)
def test_seql_matches_naive_loop_for_any_gamma(gamma: float) -> None:
    def ours(z: Tensor, y: Tensor, h: Tensor) -> Tensor:
        gen = torch.Generator().manual_seed(SEQL_SEED)
        return L.seql_loss(z, y, class_counts=COUNTS, lambda_=0.3, gamma=gamma, generator=gen, reduction="none")

    value, grad, _ = _value_and_grads(ours, 0)
    ref, ref_grad, _ = _value_and_grads(
        lambda z, y, h: naive_seql(z, y, COUNTS, 0.3, _seql_beta(y, 0.3, gamma, SEQL_SEED)), 0
    )
    torch.testing.assert_close(value, ref, **tol(torch.float64))
    torch.testing.assert_close(grad, ref_grad, **tol(torch.float64))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_class_weight_scales_each_sample(name: str) -> None:
    logits, target, features = _inputs(2)
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.0], dtype=torch.float64)
    weighted = library(name, logits, target, features, class_weight=weight).detach()
    if name in ("ib", "ib_focal"):  # IB+CB: the given weights replace the inverse-frequency ones
        ref = naive_ib(logits, target, features, COUNTS, 10.0, 0.01, weight, PARAMS[name].get("gamma"))
    else:
        ref = NAIVE[name](logits, target, features) * weight[target]
    torch.testing.assert_close(weighted, ref.detach(), **tol(torch.float64))


# --- identities --------------------------------------------------------------------------------------------------


def _ce_value_and_grad(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    z = logits.detach().clone().requires_grad_()
    loss = F.cross_entropy(z, target, reduction="none")
    loss.sum().backward()
    return loss.detach(), z.grad


def _assert_equals_ce(fn: Callable[[Tensor, Tensor], Tensor], seed: int = 0) -> None:
    logits, target, _ = _inputs(seed)
    z = logits.detach().clone().requires_grad_()
    loss = fn(z, target)
    loss.sum().backward()
    ref, ref_grad = _ce_value_and_grad(logits, target)
    torch.testing.assert_close(loss.detach(), ref, **tol(torch.float64))
    torch.testing.assert_close(z.grad, ref_grad, **tol(torch.float64))


UNIFORM = torch.full((K,), 37)

IDENTITIES_WITH_CE: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ce": lambda z, y: L.ce_loss(z, y, reduction="none"),
    "focal gamma=0": lambda z, y: L.focal_loss(z, y, gamma=0.0, reduction="none"),
    "label_smoothing epsilon=0": lambda z, y: L.label_smoothing_loss(z, y, epsilon=0.0, reduction="none"),
    "cdt gamma=0": lambda z, y: L.cdt_loss(z, y, class_counts=COUNTS, gamma=0.0, reduction="none"),
    "cdt uniform counts": lambda z, y: L.cdt_loss(z, y, class_counts=UNIFORM, gamma=0.7, reduction="none"),
    "seql gamma=0": lambda z, y: L.seql_loss(z, y, class_counts=COUNTS, lambda_=0.5, gamma=0.0, reduction="none"),
    "seql lambda_=0": lambda z, y: L.seql_loss(z, y, class_counts=COUNTS, lambda_=0.0, gamma=1.0, reduction="none"),
    "balanced_softmax uniform counts": lambda z, y: L.balanced_softmax_loss(
        z, y, class_counts=UNIFORM, reduction="none"
    ),
    "logit_adjusted uniform counts": lambda z, y: L.logit_adjusted_loss(
        z, y, class_counts=UNIFORM, tau=2.0, reduction="none"
    ),
    "ldam max_margin=0 scale=1": lambda z, y: L.ldam_loss(
        z, y, class_counts=COUNTS, max_margin=0.0, scale=1.0, reduction="none"
    ),
}


@pytest.mark.parametrize("case", sorted(IDENTITIES_WITH_CE))
def test_reduces_to_cross_entropy(case: str) -> None:
    _assert_equals_ce(IDENTITIES_WITH_CE[case])


def test_label_smoothing_equals_torch() -> None:
    logits, target, _ = _inputs(3)
    z = logits.detach().clone().requires_grad_()
    loss = L.label_smoothing_loss(z, target, epsilon=0.3)
    loss.backward()
    z_ref = logits.detach().clone().requires_grad_()
    ref = F.cross_entropy(z_ref, target, label_smoothing=0.3)
    ref.backward()
    torch.testing.assert_close(loss, ref, **tol(torch.float64))
    torch.testing.assert_close(z.grad, z_ref.grad, **tol(torch.float64))


def test_logit_adjusted_tau_one_equals_balanced_softmax() -> None:
    logits, target, _ = _inputs(4)
    adjusted = L.logit_adjusted_loss(logits, target, class_counts=COUNTS, tau=1.0, reduction="none")
    balanced = L.balanced_softmax_loss(logits, target, class_counts=COUNTS, reduction="none")
    torch.testing.assert_close(adjusted, balanced, **tol(torch.float64))


def test_ib_focal_gamma_zero_equals_ib() -> None:
    logits, target, features = _inputs(5)
    ib = L.ib_loss(logits, target, features=features, class_counts=COUNTS)
    ib_focal = L.ib_focal_loss(logits, target, features=features, class_counts=COUNTS, gamma=0.0)
    torch.testing.assert_close(ib_focal, ib, **tol(torch.float64))


def test_ldam_uniform_counts_is_a_constant_margin() -> None:
    logits, target, _ = _inputs(6)
    loss = L.ldam_loss(logits, target, class_counts=UNIFORM, max_margin=0.3, scale=4.0, reduction="none")
    shifted = logits - 0.3 * F.one_hot(target, K).to(torch.float64)
    torch.testing.assert_close(loss, F.cross_entropy(4.0 * shifted, target, reduction="none"), **tol(torch.float64))


def test_ldam_margins_follow_the_quarter_power() -> None:
    margins = L.LDAMLoss(class_counts=torch.tensor([10000, 625, 16, 1]), max_margin=0.5).margins
    torch.testing.assert_close(margins, torch.tensor([0.05, 0.1, 0.25, 0.5]))


def test_seql_gamma_one_drops_every_tail_logit_of_other_samples() -> None:
    # classes 1 and 2 are tail classes (f < 0.2); a class-0 sample only competes with class 0 itself
    counts = torch.tensor([90, 5, 5])
    logits = torch.tensor([[0.0, 3.0, 3.0], [0.0, 3.0, 3.0]])
    target = torch.tensor([0, 1])
    loss = L.seql_loss(logits, target, class_counts=counts, lambda_=0.2, gamma=1.0, reduction="none")
    # sample 1 (a tail class) keeps its own logit and drops the other tail class: softmax over z_0, z_1
    expected = torch.stack([torch.tensor(0.0), torch.logsumexp(torch.tensor([0.0, 3.0]), 0) - 3.0])
    torch.testing.assert_close(loss, expected)


def test_ib_influence_is_not_detached() -> None:
    logits, target, features = _inputs(7)
    loss = L.ib_loss(logits, target, features=features, class_counts=COUNTS)
    grad_logits, grad_features = torch.autograd.grad(loss, (logits, features))
    assert grad_features.abs().sum() > 0  # a detached factor would leave the features without a gradient
    # and the logits' gradient is not that of w_y * CE_i times a constant factor
    one_minus_p = 1 - logits.softmax(-1).gather(1, target[:, None]).squeeze(1)
    factor = (1000.0 / (2 * one_minus_p * features.abs().sum(1) + 1e-3)).detach()
    weight = L.class_weights(COUNTS).to(torch.float64)[target]
    detached = (F.cross_entropy(logits, target, reduction="none") * factor * weight).mean()
    (grad_detached,) = torch.autograd.grad(detached, logits)
    assert not torch.allclose(grad_logits, grad_detached)


def test_ib_l1_norm_identity_is_stable_near_certainty() -> None:
    # p_y -> 1: 1 - p_y = 2e-9 must not round to 0 (expm1), so the factor stays alpha / (2 (1 - p_y) |h| + eps)
    logits = torch.tensor([[20.0, 0.0]], dtype=torch.float64, requires_grad=True)
    target, features = torch.tensor([0]), torch.ones(1, 3, dtype=torch.float64)
    loss = L.ib_loss(logits, target, features=features, class_counts=[1, 1], alpha=1.0, epsilon=1e-12)
    ref = naive_ib(logits, target, features, torch.tensor([1, 1]), 1.0, 1e-12)[0]
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0.0)
