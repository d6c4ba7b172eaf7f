"""Shared helpers for the loss tests: inputs built from a ``LossInfo``'s flags, tolerances, naive references.

The naive references are per-sample Python loops written from each paper's equation, in float64, kept
deliberately unlike the library code (plain ``exp``/``sum``/``log``, literal L1 norms).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
from torch import Tensor

import lt_core.losses as L
from lt_core.losses import LOSSES, LossInfo

LOSS_NAMES = sorted(LOSSES)
FEATURE_DIM = 5

# Parameters that make a stochastic loss deterministic, for tests that compare calls on different inputs
# (batch permutation, shifts). seql with gamma=1 drops every tail logit instead of a random subset.
DETERMINISTIC_PARAMS: dict[str, dict[str, float]] = {"seql": {"gamma": 1.0}}

_TOL = {
    torch.float64: {"rtol": 1e-9, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.bfloat16: {"rtol": 5e-2, "atol": 5e-2},
}


def tol(dtype: torch.dtype) -> dict[str, float]:
    """``rtol``/``atol`` for comparing two computations in ``dtype``."""
    return _TOL[dtype]


def long_tail_counts(k: int, imbalance: float = 10.0, n_max: int = 1000) -> Tensor:
    """Exponential profile n_max -> n_max / imbalance over k classes, int64."""
    steps = torch.arange(k, dtype=torch.float64) / max(k - 1, 1)
    return (n_max * imbalance ** (-steps)).round().clamp_min(1).to(torch.int64)


@dataclass
class Batch:
    logits: Tensor
    target: Tensor
    features: Tensor | None
    counts: Tensor | None


def make_batch(
    info: LossInfo,
    n: int = 6,
    k: int = 5,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    scale: float = 3.0,
    counts: Tensor | None = None,
    requires_grad: bool = False,
) -> Batch:
    """Random inputs for ``info``: features only if it needs them, long-tailed counts only if it needs them."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, k, generator=gen, dtype=torch.float64) * scale).to(dtype)
    target = torch.randint(0, k, (n,), generator=gen)
    features = None
    if info.needs_features:
        features = torch.randn(n, FEATURE_DIM, generator=gen, dtype=torch.float64).to(dtype)
        features.requires_grad_(requires_grad)
    if info.needs_class_counts and counts is None:
        counts = long_tail_counts(k)
    logits.requires_grad_(requires_grad)
    return Batch(logits, target, features, counts if info.needs_class_counts else None)


def is_stochastic(info: LossInfo) -> bool:
    """Whether the loss draws random numbers (its functional form then takes a ``generator``)."""
    return "generator" in inspect.signature(functional(info)).parameters


def build(info: LossInfo, batch: Batch, *, deterministic: bool = False, **params: object) -> torch.nn.Module:
    """``create_loss`` with the batch's counts."""
    if deterministic:
        params = {**DETERMINISTIC_PARAMS.get(info.name, {}), **params}
    return L.create_loss(info.name, class_counts=batch.counts, **params)


def run(module: torch.nn.Module, batch: Batch, *, seed: int = 0, logits: Tensor | None = None) -> Tensor:
    """Call ``module`` on ``batch``, reseeding the default generator first so that repeated calls draw the same.

    A stochastic module holds no generator of its own: it draws from the default generator of the logits' device.
    """
    torch.manual_seed(seed)
    return module(batch.logits if logits is None else logits, batch.target, features=batch.features)


def functional(info: LossInfo):  # noqa: ANN201 - returns the loss's functional form
    """The functional form ``{name}_loss`` of a registered loss."""
    return getattr(L, f"{info.name}_loss")


def run_functional(info: LossInfo, batch: Batch, *, seed: int = 0, **params: object) -> Tensor:
    """Call the functional form with the arguments its flags ask for (a freshly seeded generator if stochastic)."""
    kwargs: dict[str, object] = dict(params)
    if info.needs_class_counts:
        kwargs["class_counts"] = batch.counts
    if info.needs_features:
        kwargs["features"] = batch.features
    if is_stochastic(info):
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
    return functional(info)(batch.logits, batch.target, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Naive references: one sample at a time, from the equations.


def _softmax(z: Tensor) -> Tensor:
    e = torch.exp(z - z.max())
    return e / e.sum()


def _clamped(counts: Tensor) -> Tensor:
    return counts.to(torch.float64).clamp_min(1.0)


def naive_ce(z: Tensor, y: Tensor) -> Tensor:
    return torch.stack([-torch.log(_softmax(z[i])[y[i]]) for i in range(len(y))])


def naive_focal(z: Tensor, y: Tensor, gamma: float) -> Tensor:
    out = []
    for i in range(len(y)):
        p_y = _softmax(z[i])[y[i]]
        out.append(-((1 - p_y) ** gamma) * torch.log(p_y))
    return torch.stack(out)


def naive_label_smoothing(z: Tensor, y: Tensor, epsilon: float) -> Tensor:
    k = z.shape[1]
    out = []
    for i in range(len(y)):
        log_p = torch.log(_softmax(z[i]))
        out.append((1 - epsilon) * -log_p[y[i]] + epsilon / k * sum(-log_p[c] for c in range(k)))
    return torch.stack(out)


def naive_seql(z: Tensor, y: Tensor, counts: Tensor, lambda_: float, beta: Tensor) -> Tensor:
    n = _clamped(counts)
    f = n / n.sum()
    out = []
    for i in range(len(y)):
        total = 0.0
        for k in range(z.shape[1]):
            w = 1.0 - float(beta[i, k]) * float(f[k] < lambda_) * (1.0 - float(k == y[i]))
            total = total + w * torch.exp(z[i, k])
        out.append(-z[i, y[i]] + torch.log(total))
    return torch.stack(out)


def naive_ib(
    z: Tensor,
    y: Tensor,
    h: Tensor,
    counts: Tensor,
    alpha: float,
    epsilon: float,
    class_weight: Tensor | None = None,
    gamma: float | None = None,
) -> Tensor:
    n = _clamped(counts)
    k = z.shape[1]
    w = k * (1 / n) / (1 / n).sum() if class_weight is None else class_weight.to(torch.float64)
    out = []
    for i in range(len(y)):
        p = _softmax(z[i])
        onehot = torch.zeros(k, dtype=z.dtype)
        onehot[y[i]] = 1.0
        ce = -torch.log(p[y[i]])
        influence = torch.abs(p - onehot).sum() * torch.abs(h[i]).sum()
        loss = w[y[i]] * ce * alpha / (influence + epsilon)
        if gamma is not None:
            loss = loss * (1 - p[y[i]]) ** gamma
        out.append(loss)
    return torch.stack(out)


def naive_cdt(z: Tensor, y: Tensor, counts: Tensor, gamma: float) -> Tensor:
    n = _clamped(counts)
    a = (n.max() / n) ** gamma
    return torch.stack([-torch.log(_softmax(z[i] / a)[y[i]]) for i in range(len(y))])


def naive_ldam(z: Tensor, y: Tensor, counts: Tensor, max_margin: float, scale: float) -> Tensor:
    n = _clamped(counts)
    raw = 1.0 / n**0.25
    m = raw * (max_margin / raw.max())  # C chosen so that max_j m_j = max_margin
    out = []
    for i in range(len(y)):
        x = z[i].clone()
        x[y[i]] = x[y[i]] - m[y[i]]
        out.append(-torch.log(_softmax(scale * x)[y[i]]))
    return torch.stack(out)


def naive_balanced_softmax(z: Tensor, y: Tensor, counts: Tensor) -> Tensor:
    log_n = torch.log(_clamped(counts))
    return torch.stack([-torch.log(_softmax(z[i] + log_n)[y[i]]) for i in range(len(y))])


def naive_logit_adjusted(z: Tensor, y: Tensor, counts: Tensor, tau: float) -> Tensor:
    n = _clamped(counts)
    log_pi = torch.log(n / n.sum())
    return torch.stack([-torch.log(_softmax(z[i] + tau * log_pi)[y[i]]) for i in range(len(y))])


def assert_finite(*tensors: Tensor | None) -> None:
    for t in tensors:
        if t is not None:
            assert torch.isfinite(t).all(), t


def isclose(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel)
