"""Class-dependent temperatures (CDT) cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._fused import transformed_cross_entropy
from ._utils import (
    Reduction,
    WeightedLoss,
    check_class_counts,
    check_class_weight,
    check_logits_target,
    check_param,
    check_reduction,
    weight_and_reduce,
)
from .registry import register

__all__ = ["CDTLoss", "cdt_loss"]


def _inverse_temperature(
    class_counts: Tensor | Sequence[float], gamma: float, num_classes: int | None = None
) -> Tensor:
    counts = check_class_counts(class_counts, num_classes)  # float64, >= 1
    return (counts / counts.max()).pow(gamma)  # (K,), 1 / a_c = (n_c / n_max)^gamma, in (0, 1]


def _cdt(
    logits: Tensor, target: Tensor, inverse_temperature: Tensor, class_weight: Tensor | None, reduction: Reduction
) -> Tensor:
    loss = transformed_cross_entropy(logits, target, scale=inverse_temperature.to(logits.dtype))
    return weight_and_reduce(loss, target, class_weight, reduction)


def cdt_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: Tensor | Sequence[float],
    gamma: float = 0.2,
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Class-dependent temperatures (CDT) loss.

    Ye et al., 2020, "Identifying and Compensating for Feature Deviation in Imbalanced Deep Learning".

    .. math:: l_i = -w_{y_i} \log \mathrm{softmax}(z_i / a)_{y_i}, \quad a_c = (n_{\max} / n_c)^\gamma

    Training-time only: predict with the raw z. ``gamma=0`` or uniform counts give cross-entropy. Not
    shift-invariant in z (each class has its own temperature).

    Args:
        logits: raw scores z, shape (N, K), floating.
        target: class indices, shape (N,), int64 in [0, K).
        class_counts: training images per class n, shape (K,), clamped to >= 1.
        gamma: temperature exponent, >= 0.
        class_weight: optional per-class weight w, shape (K,).
        reduction: ``"none"``, ``"mean"`` (sum / N) or ``"sum"``.

    Shape:
        Output: (N,) for ``"none"``, else ().

    Example:
        >>> z, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
        >>> cdt_loss(z, y, class_counts=torch.tensor([1, 1]))
        tensor(0.1269)
    """
    k = check_logits_target(logits, target)
    gamma = check_param("gamma", gamma, ge=0.0)
    scale = _inverse_temperature(class_counts, gamma, k).to(logits.device)
    return _cdt(logits, target, scale, check_class_weight(class_weight, k), check_reduction(reduction))


@register(
    "cdt",
    description="Cross-entropy with class-dependent temperatures (n_max / n_c)^gamma (Ye et al., 2020).",
    needs_class_counts=True,
)
class CDTLoss(WeightedLoss):
    """Module form of :func:`cdt_loss`; ``1 / a`` is the ``inverse_temperature`` buffer (K,).

    Example:
        >>> CDTLoss(class_counts=torch.tensor([1, 1]))(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
        tensor(0.1269)
    """

    hparams = ("gamma",)
    inverse_temperature: Tensor

    def __init__(
        self,
        *,
        class_counts: Tensor | Sequence[float],
        gamma: float = 0.2,
        class_weight: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_weight=class_weight, reduction=reduction)
        self.gamma = check_param("gamma", gamma, ge=0.0)
        scale = _inverse_temperature(class_counts, self.gamma).to(torch.get_default_dtype())
        self.register_buffer("inverse_temperature", scale)

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` (N, K) against ``target`` (N,)."""
        self._check(logits, target, class_counts=self.inverse_temperature)
        return _cdt(logits, target, self.inverse_temperature, self.class_weight, self.reduction)
