"""Logit-adjusted cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._fused import shifted_cross_entropy as _shifted_ce
from ._utils import (
    Reduction,
    WeightedLoss,
    check_class_counts,
    check_class_weight,
    check_logits_target,
    check_param,
    check_reduction,
)
from .registry import register

__all__ = ["LogitAdjustedLoss", "logit_adjusted_loss"]


def _adjustment(class_counts: Tensor | Sequence[float], tau: float, num_classes: int | None = None) -> Tensor:
    counts = check_class_counts(class_counts, num_classes)  # float64, >= 1
    return tau * (counts / counts.sum()).log()  # (K,), tau * log pi


def logit_adjusted_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: Tensor | Sequence[float],
    tau: float = 1.0,
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Logit-adjusted loss (Menon et al., 2021, "Long-tail learning via logit adjustment").

    .. math:: l_i = -w_{y_i} \log \mathrm{softmax}(z_i + \tau \log \pi)_{y_i}, \quad \pi = n / \textstyle\sum_k n_k

    Training-time only: predict with the raw z. ``tau=1`` is :func:`balanced_softmax_loss`; uniform counts give
    cross-entropy (a constant shift).

    Args:
        logits: raw scores z, shape (N, K), floating.
        target: class indices, shape (N,), int64 in [0, K).
        class_counts: training images per class n, shape (K,), clamped to >= 1.
        tau: strength of the adjustment, > 0.
        class_weight: optional per-class weight w, shape (K,).
        reduction: ``"none"``, ``"mean"`` (sum / N) or ``"sum"``.

    Shape:
        Output: (N,) for ``"none"``, else ().

    Example:
        >>> logit_adjusted_loss(torch.zeros(2, 2), torch.tensor([0, 1]), class_counts=torch.tensor([3, 1]))
        tensor(0.8370)
    """
    k = check_logits_target(logits, target)
    tau = check_param("tau", tau, gt=0.0)
    offset = _adjustment(class_counts, tau, k).to(logits.device, logits.dtype)
    return _shifted_ce(logits, target, offset, check_class_weight(class_weight, k), check_reduction(reduction))


@register(
    "logit_adjusted",
    description="Logit-adjusted cross-entropy on z + tau log pi (Menon et al., 2021).",
    needs_class_counts=True,
)
class LogitAdjustedLoss(WeightedLoss):
    """Module form of :func:`logit_adjusted_loss`; ``tau log pi`` is the ``logit_adjustment`` buffer (K,).

    Example:
        >>> LogitAdjustedLoss(class_counts=torch.tensor([3, 1]))(torch.zeros(2, 2), torch.tensor([0, 1]))
        tensor(0.8370)
    """

    hparams = ("tau",)
    logit_adjustment: Tensor

    def __init__(
        self,
        *,
        class_counts: Tensor | Sequence[float],
        tau: float = 1.0,
        class_weight: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_weight=class_weight, reduction=reduction)
        self.tau = check_param("tau", tau, gt=0.0)
        self.register_buffer("logit_adjustment", _adjustment(class_counts, self.tau).to(torch.get_default_dtype()))

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` (N, K) against ``target`` (N,)."""
        self._check(logits, target, class_counts=self.logit_adjustment)
        return _shifted_ce(logits, target, self.logit_adjustment.to(logits.dtype), self.class_weight, self.reduction)
