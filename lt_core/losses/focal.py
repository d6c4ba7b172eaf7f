"""Focal loss (softmax form)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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

__all__ = ["FocalLoss", "focal_loss"]


def _focal(logits: Tensor, target: Tensor, gamma: float, class_weight: Tensor | None, reduction: Reduction) -> Tensor:
    log_p = logits.log_softmax(-1).gather(1, target[:, None]).squeeze(1)  # (N,)
    # 1 - p_y as -expm1(log p_y): no cancellation when p_y is close to 1.
    loss = -(-torch.expm1(log_p)).pow(gamma) * log_p
    return weight_and_reduce(loss, target, class_weight, reduction)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float = 1.0,
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection"), softmax form.

    .. math:: l_i = -w_{y_i} (1 - p_{y_i})^\gamma \log p_{y_i}, \quad p = \mathrm{softmax}(z_i)

    :math:`\log p_y` comes from ``log_softmax`` and :math:`1 - p_y` from ``-expm1(log p_y)``. Reduces to
    cross-entropy when ``gamma=0``. For ``0 < gamma < 1`` the gradient is undefined where :math:`p_y` is exactly 1.

    Args:
        logits: raw scores z, shape (N, K), floating.
        target: class indices, shape (N,), int64 in [0, K).
        gamma: focusing parameter, >= 0.
        class_weight: optional per-class weight w, shape (K,).
        reduction: ``"none"``, ``"mean"`` (sum / N, also with ``class_weight``) or ``"sum"``.

    Shape:
        Output: (N,) for ``"none"``, else ().

    Example:
        >>> focal_loss(torch.zeros(2, 3), torch.tensor([0, 2]), gamma=2.0)
        tensor(0.4883)
    """
    k = check_logits_target(logits, target)
    gamma = check_param("gamma", gamma, ge=0.0)
    return _focal(logits, target, gamma, check_class_weight(class_weight, k), check_reduction(reduction))


@register("focal", description="Focal loss: cross-entropy scaled by (1 - p_y)^gamma (Lin et al., 2017).")
class FocalLoss(WeightedLoss):
    """Module form of :func:`focal_loss`; ``features`` is accepted and ignored.

    Example:
        >>> FocalLoss(gamma=2.0)(torch.zeros(2, 3), torch.tensor([0, 2]))
        tensor(0.4883)
    """

    hparams = ("gamma",)

    def __init__(
        self,
        *,
        gamma: float = 1.0,
        class_weight: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_weight=class_weight, reduction=reduction)
        self.gamma = check_param("gamma", gamma, ge=0.0)

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` (N, K) against ``target`` (N,)."""
        self._check(logits, target)
        return _focal(logits, target, self.gamma, self.class_weight, self.reduction)
