"""Influence-balanced focal loss."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ._utils import Reduction, WeightedLoss, check_features, check_logits_target, check_param, check_reduction
from .ib import _ib, _ib_weight
from .registry import register

__all__ = ["IBFocalLoss", "ib_focal_loss"]


def ib_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    features: Tensor,
    class_counts: Tensor | Sequence[float],
    alpha: float = 1000.0,
    epsilon: float = 1e-3,
    gamma: float = 1.0,
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Influence-balanced focal loss (Park et al., 2021): :func:`ib_loss` times :math:`(1 - p_{y_i})^\gamma`.

    .. math:: l_i = w_{y_i} \frac{\alpha \, (1 - p_{y_i})^\gamma (-\log p_{y_i})}
              {2 (1 - p_{y_i}) \lVert h_i \rVert_1 + \epsilon}

    :math:`p_y` is from the unweighted softmax (the authors' code took it from the class-weighted loss).
    ``gamma=0`` gives :func:`ib_loss`. Gradients flow through the influence factor, as in :func:`ib_loss`.

    Args:
        logits: raw scores z, shape (N, K), floating.
        target: class indices, shape (N,), int64 in [0, K).
        features: penultimate-layer activations h, shape (N, D).
        class_counts: training images per class n, shape (K,), clamped to >= 1.
        alpha: scale of the influence weight, > 0.
        epsilon: added to the denominator, > 0.
        gamma: focusing parameter, >= 0.
        class_weight: per-class weight w, shape (K,); replaces the inverse-frequency default.
        reduction: ``"none"``, ``"mean"`` (sum / N) or ``"sum"``.

    Shape:
        Output: (N,) for ``"none"``, else ().

    Example:
        >>> z, y, h = torch.zeros(2, 2), torch.tensor([0, 1]), torch.ones(2, 3)
        >>> ib_focal_loss(z, y, features=h, class_counts=torch.tensor([1, 1]), alpha=1.0)
        tensor(0.1155)
    """
    k = check_logits_target(logits, target)
    features = check_features(features, logits.shape[0], "ib_focal")
    alpha = check_param("alpha", alpha, gt=0.0)
    epsilon = check_param("epsilon", epsilon, gt=0.0)
    gamma = check_param("gamma", gamma, ge=0.0)
    weight = _ib_weight(class_counts, class_weight, k).to(logits.device)
    return _ib(logits, target, features, weight, alpha, epsilon, gamma, check_reduction(reduction))


@register(
    "ib_focal",
    description="Influence-balanced loss times the focal factor (1 - p_y)^gamma (Park et al., 2021).",
    needs_class_counts=True,
    needs_features=True,
)
class IBFocalLoss(WeightedLoss):
    """Module form of :func:`ib_focal_loss`; the weights w are the ``class_weight`` buffer (K,).

    Example:
        >>> loss = IBFocalLoss(class_counts=torch.tensor([1, 1]), alpha=1.0)
        >>> loss(torch.zeros(2, 2), torch.tensor([0, 1]), features=torch.ones(2, 3))
        tensor(0.1155)
    """

    hparams = ("alpha", "epsilon", "gamma")
    class_weight: Tensor

    def __init__(
        self,
        *,
        class_counts: Tensor | Sequence[float],
        alpha: float = 1000.0,
        epsilon: float = 1e-3,
        gamma: float = 1.0,
        class_weight: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_weight=_ib_weight(class_counts, class_weight), reduction=reduction)
        self.alpha = check_param("alpha", alpha, gt=0.0)
        self.epsilon = check_param("epsilon", epsilon, gt=0.0)
        self.gamma = check_param("gamma", gamma, ge=0.0)

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` (N, K) against ``target`` (N,), given ``features`` (N, D)."""
        self._check(logits, target)
        features = check_features(features, logits.shape[0], "ib_focal")
        return _ib(logits, target, features, self.class_weight, self.alpha, self.epsilon, self.gamma, self.reduction)
