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
    """The model's classifier when it is a plain ``nn.Linear`` (tau-normalisation applies), else None.

    The head is ``classifier`` (this project's MLP and ResNet-32) or ``fc`` (the torchvision-layout ResNets).
    """
    module = getattr(model, "module", model)
    for name in ("classifier", "fc"):
        head = getattr(module, name, None)
        if head is not None:
            return head if type(head) is nn.Linear else None
    return None


def _head_stats(head: nn.Linear, like: Tensor) -> tuple[Tensor, Tensor]:
    """Row norms ``(K,)`` of the head's weight and its bias (zeros without one), as ``like``'s dtype and device."""
    weight = head.weight.detach()
    norms = weight.float().norm(dim=1).clamp(min=1e-12).to(like.device, like.dtype)
    bias = torch.zeros_like(norms) if head.bias is None else head.bias.detach().to(like.device, like.dtype)
    return norms, bias


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
        method: ``logit_adjustment`` (needs ``prior`` = ``log_prior(counts)``) or ``tau_norm`` (needs ``head``: the
            logits of the rescaled rows follow from the raw ones, ``(z_c - b_c) / ||w_c||^tau + b_c``).
        tau: The strength.
        prior: ``(K,)`` log class prior.
        features: Unused (kept for callers that pass the classifier's input).
        head: The linear classifier that produced ``logits``.
    """
    if tau == 0:
        return logits
    if method == "logit_adjustment":
        if prior is None:
            raise ValueError("logit_adjustment needs the log class prior")
        return logits - tau * prior.to(logits.device, logits.dtype)
    if method == "tau_norm":
        if head is None:
            raise ValueError("tau_norm needs the model's linear head")
        norms, bias = _head_stats(head, logits)
        # w_c / ||w_c||^tau scales the head's row c: (z_c - b_c) / ||w_c||^tau + b_c, no second matmul needed
        return (logits - bias) / norms.pow(torch.tensor(float(tau), dtype=norms.dtype)) + bias
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
        """Add a batch: ``logits`` (N, K) raw, ``target`` (N,), ``features`` (N, D) for tau-normalisation.

        Every tau of a method in one pass: ``(T, N, K)`` adjusted logits, one argmax and one bincount.
        """
        k = self.num_classes
        logits = logits.detach().to("cpu", torch.float32)
        target = target.detach().to("cpu", torch.int64)
        raw_pred = logits.log_softmax(dim=1).argmax(dim=1)  # as EvalAccumulator predicts: tau = 0 is exactly raw
        taus = torch.tensor(self.taus, dtype=torch.float32)
        offsets = torch.arange(len(self.taus)).view(-1, 1) * (k * k)
        for m, method in enumerate(self.methods):
            if method == "logit_adjustment":
                z = logits.unsqueeze(0) - taus.view(-1, 1, 1) * self.prior.view(1, 1, -1)
            else:
                assert self.head is not None  # tau-normalisation is among the methods only with a head
                norms, bias = _head_stats(self.head, logits)
                z = (logits - bias).unsqueeze(0) / norms.view(1, 1, -1).pow(taus.view(-1, 1, 1)) + bias
            pred = z.argmax(dim=2)  # (T, N)
            pred[taus == 0] = raw_pred
            index = (offsets + target.view(1, -1) * k + pred).reshape(-1)
            counts = torch.bincount(index, minlength=len(self.taus) * k * k).view(len(self.taus), k, k)
            self.confusion[m] += counts.to(self.confusion.device)

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
                full = metrics_from_confusion(confusion[m, i], train_counts, calibration=None, **thresholds)
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
