"""Post-hoc adjustment of a trained classifier, evaluated on a grid of tau at every evaluation.

Two methods, both free once the logits (and features) of an evaluation are computed:

- ``logit_adjustment`` (Menon et al., 2021): predict ``argmax(z - tau * log pi)``, ``pi`` the training class prior.
- ``tau_norm`` (Kang et al., 2020): the classifier's rows rescaled, ``w_c / ||w_c||^tau`` (bias kept), for linear
  heads (``nn.Linear``) only; a cosine head is already normalised.

At ``tau = 0`` both are the raw model: the raw logits are used as they are, so the post-hoc metrics at ``tau = 0``
equal the raw metrics exactly. ``choose`` picks a variant on validation metrics; the chosen one is then reported on
the test split (never chosen on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from lt_core.metrics import metrics_from_confusion

__all__ = [
    "LA_ONLY",
    "METHODS",
    "POSTHOC_METRICS",
    "TAUS",
    "PosthocAccumulator",
    "adjust_logits",
    "choose",
    "linear_head",
    "log_prior",
]

TAUS: tuple[float, ...] = tuple(i / 4 for i in range(9))  # 0, 0.25, ..., 2
METHODS: tuple[str, ...] = ("logit_adjustment", "tau_norm")
LA_ONLY: tuple[str, ...] = ("logit_adjustment",)
# The metrics computed per post-hoc variant (from its confusion matrix; no calibration).
POSTHOC_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
    "macro_f1",
)


def log_prior(class_counts: Sequence[int] | Tensor) -> Tensor:
    """``log pi`` of the training counts, (K,) float32; a class without samples counts as one (a finite log)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp(min=1.0)
    return (counts / counts.sum()).log().float()


def linear_head(model: nn.Module) -> nn.Linear | None:
    """The model's classifier when it is a plain ``nn.Linear`` (tau-normalisation applies), else None."""
    head = getattr(getattr(model, "module", model), "classifier", None)
    return head if type(head) is nn.Linear else None


def adjust_logits(
    logits: Tensor,
    method: str,
    tau: float,
    *,
    prior: Tensor | None = None,
    features: Tensor | None = None,
    head: nn.Linear | None = None,
) -> Tensor:
    """The logits of one post-hoc variant; ``logits`` themselves at ``tau = 0``.

    Args:
        logits: ``(N, K)`` raw logits.
        method: ``logit_adjustment`` (needs ``prior`` = ``log_prior(counts)``) or ``tau_norm`` (needs ``features``,
            the classifier's ``(N, D)`` input, and ``head``).
        tau: The strength.
        prior: ``(K,)`` log class prior.
        features: ``(N, D)``.
        head: The linear classifier.
    """
    if tau == 0:
        return logits
    if method == "logit_adjustment":
        if prior is None:
            raise ValueError("logit_adjustment needs the log class prior")
        return logits - tau * prior.to(logits.device, logits.dtype)
    if method == "tau_norm":
        if head is None or features is None:
            raise ValueError("tau_norm needs a linear head and the features")
        weight = head.weight.detach().float()
        weight = weight / weight.norm(dim=1, keepdim=True).clamp(min=1e-12).pow(tau)
        bias = None if head.bias is None else head.bias.detach().float()
        return F.linear(features.float().to(weight.device), weight, bias).to(logits.device)
    raise ValueError(f"unknown post-hoc method {method!r}; known: {list(METHODS)}")


class PosthocAccumulator:
    """Confusion matrices of every (method, tau) variant, summable across workers like ``EvalAccumulator``.

    Args:
        num_classes: ``K``.
        class_counts: ``(K,)`` training counts (the prior of logit adjustment).
        head: The linear classifier (tau-normalisation), or None to skip that method.
        taus: The grid.
    """

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor,
        head: nn.Linear | None = None,
        taus: Sequence[float] = TAUS,
    ) -> None:
        """Zeroed confusion matrices ``(M, T, K, K)``."""
        self.num_classes, self.taus, self.head = num_classes, tuple(float(t) for t in taus), head
        self.methods = METHODS if head is not None else LA_ONLY
        self.prior = log_prior(class_counts)
        self.confusion = torch.zeros(len(self.methods), len(self.taus), num_classes, num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, logits: Tensor, target: Tensor, features: Tensor | None = None) -> None:
        """Add a batch: ``logits`` (N, K) raw, ``target`` (N,), ``features`` (N, D) for tau-normalisation."""
        k = self.num_classes
        logits = logits.detach().to("cpu", torch.float32)
        target = target.detach().to("cpu", torch.int64)
        raw_pred = logits.log_softmax(dim=1).argmax(dim=1)  # as EvalAccumulator predicts: tau = 0 is exactly raw
        for m, method in enumerate(self.methods):
            for i, tau in enumerate(self.taus):
                if tau == 0:
                    pred = raw_pred
                else:
                    z = adjust_logits(logits, method, tau, prior=self.prior, features=features, head=self.head)
                    pred = z.argmax(dim=1).cpu()
                self.confusion[m, i] += torch.bincount(target * k + pred, minlength=k * k).view(k, k)

    def tensors(self) -> list[Tensor]:
        """The summable state, by reference."""
        return [self.confusion]

    def to(self, device: torch.device | str) -> PosthocAccumulator:
        """Move the state to ``device``; returns ``self``."""
        self.confusion = self.confusion.to(device)
        return self

    def compute(self, train_counts: Sequence[int] | Tensor, **thresholds: int) -> dict[str, list[dict[str, Any]]]:
        """Per method, one dict of ``POSTHOC_METRICS`` per tau of the grid."""
        out: dict[str, list[dict[str, Any]]] = {}
        confusion = self.confusion.cpu()
        for m, method in enumerate(self.methods):
            rows = []
            for i in range(len(self.taus)):
                full = metrics_from_confusion(confusion[m, i], train_counts, **thresholds)
                rows.append({k: full.get(k) for k in POSTHOC_METRICS})
            out[method] = rows
        return out


def choose(
    val: dict[str, list[dict[str, Any]]],
    metric: str,
    mode: str = "max",
    taus: Sequence[float] = TAUS,
    methods: Sequence[str] | None = None,
) -> tuple[str, float]:
    """The (method, tau) with the best validation ``metric``; ties go to the raw model, then the smaller tau.

    Args:
        val: ``PosthocAccumulator.compute`` of the validation split.
        metric: One of ``POSTHOC_METRICS``.
        mode: ``max`` or ``min``.
        taus: The grid ``val`` was computed on.
        methods: Restrict the choice (e.g. ``LA_ONLY``); default every method in ``val``.
    """
    best: tuple[str, float] = ("logit_adjustment", 0.0)
    best_value = val.get("logit_adjustment", [{}])[0].get(metric)
    for method in methods or list(val):
        for tau, row in zip(taus, val.get(method, []), strict=False):
            value = row.get(metric)
            if value is None:
                continue
            if best_value is None or (value > best_value if mode == "max" else value < best_value):
                best, best_value = (method, float(tau)), value
    return best
