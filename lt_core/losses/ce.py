"""Cross-entropy, the baseline every other loss reduces to."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from ._utils import Reduction, WeightedLoss, check_class_weight, check_logits_target, check_reduction, weight_and_reduce
from .registry import register

__all__ = ["CrossEntropyLoss", "ce_loss"]


def _ce(logits: Tensor, target: Tensor, class_weight: Tensor | None, reduction: Reduction) -> Tensor:
    return weight_and_reduce(F.cross_entropy(logits, target, reduction="none"), target, class_weight, reduction)


def ce_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Softmax cross-entropy: :math:`l_i = -w_{y_i} \log p_{y_i}`, :math:`p = \mathrm{softmax}(z_i)`.

    Unlike ``F.cross_entropy(weight=w)``, whose ``"mean"`` divides by :math:`\sum_i w_{y_i}`, ``"mean"`` here
    divides by N (as the class-balanced and IB reference code do); without ``class_weight`` the two agree.

    Args:
        logits: raw scores z, shape (N, K), floating.
        target: class indices, shape (N,), int64 in [0, K).
        class_weight: optional per-class weight w, shape (K,).
        reduction: ``"none"``, ``"mean"`` (sum / N) or ``"sum"``.

    Shape:
        Output: (N,) for ``"none"``, else ().

    Example:
        >>> ce_loss(torch.zeros(2, 4), torch.tensor([0, 3]))
        tensor(1.3863)
    """
    k = check_logits_target(logits, target)
    return _ce(logits, target, check_class_weight(class_weight, k), check_reduction(reduction))


@register("ce", description="Softmax cross-entropy.")
class CrossEntropyLoss(WeightedLoss):
    """Module form of :func:`ce_loss`; ``features`` is accepted and ignored.

    Example:
        >>> CrossEntropyLoss()(torch.zeros(2, 4), torch.tensor([0, 3]))
        tensor(1.3863)
    """

    def __init__(self, *, class_weight: Tensor | Sequence[float] | None = None, reduction: Reduction = "mean") -> None:
        super().__init__(class_weight=class_weight, reduction=reduction)

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` (N, K) against ``target`` (N,)."""
        self._check(logits, target)
        return _ce(logits, target, self.class_weight, self.reduction)
