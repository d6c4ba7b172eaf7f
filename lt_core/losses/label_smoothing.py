"""Label-smoothing cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from ._utils import (
    Reduction,
    WeightedLoss,
    check_class_weight,
    check_logits_target,
    check_param,
    check_reduction,
    weight_and_reduce,
)
from .registry import register

__all__ = ["LabelSmoothingLoss", "label_smoothing_loss"]


def _label_smoothing(
    logits: Tensor, target: Tensor, epsilon: float, class_weight: Tensor | None, reduction: Reduction
) -> Tensor:
    loss = F.cross_entropy(logits, target, reduction="none", label_smoothing=epsilon)
    return weight_and_reduce(loss, target, class_weight, reduction)


def label_smoothing_loss(
    logits: Tensor,
    target: Tensor,
    *,
    epsilon: float = 0.1,
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Label-smoothing cross-entropy (Szegedy et al., 2016, "Rethinking the Inception Architecture").

    .. math:: l_i = w_{y_i}\Big[(1 - \varepsilon)(-\log p_{y_i}) + \frac{\varepsilon}{K}\sum_c -\log p_c\Big]

    Without ``class_weight`` it is ``F.cross_entropy(label_smoothing=epsilon)``; ``epsilon=0`` is cross-entropy.
    With ``class_weight`` the whole sample loss is scaled by :math:`w_{y_i}` and ``"mean"`` divides by N
    (torch instead weights each smoothing term by :math:`w_c` and divides by :math:`\sum_i w_{y_i}`).

    Args:
        logits: raw scores z, shape (N, K), floating.
        target: class indices, shape (N,), int64 in [0, K).
        epsilon: smoothing mass, in [0, 1).
        class_weight: optional per-class weight w, shape (K,).
        reduction: ``"none"``, ``"mean"`` (sum / N) or ``"sum"``.

    Shape:
        Output: (N,) for ``"none"``, else ().

    Example:
        >>> label_smoothing_loss(torch.zeros(2, 4), torch.tensor([0, 3]), epsilon=0.2)
        tensor(1.3863)
    """
    k = check_logits_target(logits, target)
    epsilon = check_param("epsilon", epsilon, ge=0.0, lt=1.0)
    return _label_smoothing(logits, target, epsilon, check_class_weight(class_weight, k), check_reduction(reduction))


@register("label_smoothing", description="Cross-entropy against labels smoothed by epsilon (Szegedy et al., 2016).")
class LabelSmoothingLoss(WeightedLoss):
    """Module form of :func:`label_smoothing_loss`; ``features`` is accepted and ignored.

    Example:
        >>> LabelSmoothingLoss(epsilon=0.2)(torch.zeros(2, 4), torch.tensor([0, 3]))
        tensor(1.3863)
    """

    hparams = ("epsilon",)

    def __init__(
        self,
        *,
        epsilon: float = 0.1,
        class_weight: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_weight=class_weight, reduction=reduction)
        self.epsilon = check_param("epsilon", epsilon, ge=0.0, lt=1.0)

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` (N, K) against ``target`` (N,)."""
        self._check(logits, target)
        return _label_smoothing(logits, target, self.epsilon, self.class_weight, self.reduction)
