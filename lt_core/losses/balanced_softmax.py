"""Balanced softmax: cross-entropy on logits shifted by the log class counts."""

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
    check_reduction,
)
from .registry import register

__all__ = ["BalancedSoftmaxLoss", "balanced_softmax_loss"]


def balanced_softmax_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: Tensor | Sequence[float],
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Balanced softmax (Ren et al., 2020, "Balanced Meta-Softmax for Long-Tailed Visual Recognition").

    .. math:: l_i = -w_{y_i} \log \mathrm{softmax}(z_i + \log n)_{y_i}

    Training-time only: predict with the raw z. Uniform counts give cross-entropy (a constant shift), and it
    equals :func:`logit_adjusted_loss` with ``tau=1``.

    Args:
        logits: raw scores z, shape (N, K), floating.
        target: class indices, shape (N,), int64 in [0, K).
        class_counts: training images per class n, shape (K,), clamped to >= 1.
        class_weight: optional per-class weight w, shape (K,).
        reduction: ``"none"``, ``"mean"`` (sum / N) or ``"sum"``.

    Shape:
        Output: (N,) for ``"none"``, else ().

    Example:
        >>> balanced_softmax_loss(torch.zeros(2, 2), torch.tensor([0, 1]), class_counts=torch.tensor([3, 1]))
        tensor(0.8370)
    """
    k = check_logits_target(logits, target)
    log_prior = check_class_counts(class_counts, k).log().to(logits.device, logits.dtype)
    return _shifted_ce(logits, target, log_prior, check_class_weight(class_weight, k), check_reduction(reduction))


@register(
    "balanced_softmax",
    description="Balanced softmax: cross-entropy on z + log n (Ren et al., 2020).",
    needs_class_counts=True,
)
class BalancedSoftmaxLoss(WeightedLoss):
    """Module form of :func:`balanced_softmax_loss`; ``log n`` is the ``log_prior`` buffer (K,).

    Example:
        >>> BalancedSoftmaxLoss(class_counts=torch.tensor([3, 1]))(torch.zeros(2, 2), torch.tensor([0, 1]))
        tensor(0.8370)
    """

    log_prior: Tensor

    def __init__(
        self,
        *,
        class_counts: Tensor | Sequence[float],
        class_weight: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_weight=class_weight, reduction=reduction)
        self.register_buffer("log_prior", check_class_counts(class_counts).log().to(torch.get_default_dtype()))

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` (N, K) against ``target`` (N,)."""
        self._check(logits, target, class_counts=self.log_prior)
        return _shifted_ce(logits, target, self.log_prior.to(logits.dtype), self.class_weight, self.reduction)
