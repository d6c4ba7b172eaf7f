"""Label-distribution-aware margin (LDAM) loss."""

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

__all__ = ["LDAMLoss", "ldam_loss"]


def _margins(class_counts: Tensor | Sequence[float], max_margin: float, num_classes: int | None = None) -> Tensor:
    counts = check_class_counts(class_counts, num_classes)  # float64, >= 1
    # m_j = C / n_j^(1/4) with C set so that the rarest class gets max_margin.
    return max_margin * (counts.min() / counts).pow(0.25)  # (K,)


def _ldam(
    logits: Tensor, target: Tensor, margins: Tensor, scale: float, class_weight: Tensor | None, reduction: Reduction
) -> Tensor:
    # s (z - m_y e_y) = s z + (-s m_y) e_y
    loss = transformed_cross_entropy(
        logits, target, scale=scale, target_offset=margins.to(logits.dtype)[target] * -scale
    )
    return weight_and_reduce(loss, target, class_weight, reduction)


def ldam_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: Tensor | Sequence[float],
    max_margin: float = 0.5,
    scale: float = 30.0,
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""LDAM loss (Cao et al., 2019, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss").

    .. math:: l_i = -w_{y_i} \log \mathrm{softmax}\big(s (z_i - m_{y_i} e_{y_i})\big)_{y_i}, \quad
              m_j = C / n_j^{1/4}, \quad \max_j m_j = \text{max\_margin}

    Meant for cosine logits (a normalised classifier, z in [-1, 1]), hence the ``scale`` s. ``max_margin=0``
    and ``scale=1`` give cross-entropy; uniform counts give the constant margin ``max_margin``.

    Args:
        logits: raw scores z, shape (N, K), floating.
        target: class indices, shape (N,), int64 in [0, K).
        class_counts: training images per class n, shape (K,), clamped to >= 1.
        max_margin: margin of the rarest class, >= 0.
        scale: logit scale s, > 0.
        class_weight: optional per-class weight w, shape (K,) (DRW is this weight, chosen per epoch by the engine).
        reduction: ``"none"``, ``"mean"`` (sum / N) or ``"sum"``.

    Shape:
        Output: (N,) for ``"none"``, else ().

    Example:
        >>> z, y = torch.zeros(2, 2), torch.tensor([0, 1])
        >>> ldam_loss(z, y, class_counts=torch.tensor([16, 1]), max_margin=0.5, scale=1.0)
        tensor(0.9000)
    """
    k = check_logits_target(logits, target)
    max_margin = check_param("max_margin", max_margin, ge=0.0)
    scale = check_param("scale", scale, gt=0.0)
    margins = _margins(class_counts, max_margin, k).to(logits.device)
    return _ldam(logits, target, margins, scale, check_class_weight(class_weight, k), check_reduction(reduction))


@register(
    "ldam",
    description="Cross-entropy with per-class margins C / n^(1/4) on scaled logits (Cao et al., 2019).",
    needs_class_counts=True,
)
class LDAMLoss(WeightedLoss):
    """Module form of :func:`ldam_loss`; the margins are the ``margins`` buffer (K,).

    Example:
        >>> loss = LDAMLoss(class_counts=torch.tensor([16, 1]), max_margin=0.5, scale=1.0)
        >>> loss(torch.zeros(2, 2), torch.tensor([0, 1]))
        tensor(0.9000)
    """

    hparams = ("max_margin", "scale")
    margins: Tensor

    def __init__(
        self,
        *,
        class_counts: Tensor | Sequence[float],
        max_margin: float = 0.5,
        scale: float = 30.0,
        class_weight: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_weight=class_weight, reduction=reduction)
        self.max_margin = check_param("max_margin", max_margin, ge=0.0)
        self.scale = check_param("scale", scale, gt=0.0)
        self.register_buffer("margins", _margins(class_counts, self.max_margin).to(torch.get_default_dtype()))

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` (N, K) against ``target`` (N,)."""
        self._check(logits, target, class_counts=self.margins)
        return _ldam(logits, target, self.margins, self.scale, self.class_weight, self.reduction)
