"""Influence-balanced (IB) loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._utils import (
    Reduction,
    WeightedLoss,
    check_class_counts,
    check_class_weight,
    check_features,
    check_logits_target,
    check_param,
    check_reduction,
    weight_and_reduce,
)
from .registry import register
from .weights import _class_weights

__all__ = ["IBLoss", "ib_loss"]


def _ib(
    logits: Tensor,
    target: Tensor,
    features: Tensor,
    class_weight: Tensor,
    alpha: float,
    epsilon: float,
    gamma: float | None,
    reduction: Reduction,
) -> Tensor:
    """IB loss, times (1 - p_y)^gamma unless ``gamma`` is None; shared with ``ib_focal``."""
    log_p = logits.log_softmax(-1).gather(1, target[:, None]).squeeze(1)  # (N,)
    # ||p - onehot(y)||_1 = (1 - p_y) + sum_{k != y} p_k = 2 (1 - p_y); 1 - p_y as -expm1(log p_y) for accuracy.
    one_minus_p = -torch.expm1(log_p)
    feature_l1 = features.abs().sum(-1).to(log_p.dtype)  # (N,), ||h_i||_1
    # Not detached: the gradient flows through p and h, as in the reference implementation.
    influence = alpha / (2.0 * one_minus_p * feature_l1 + epsilon)
    loss = -log_p * influence
    if gamma is not None:
        loss = loss * one_minus_p.pow(gamma)
    return weight_and_reduce(loss, target, class_weight, reduction)


def _ib_weight(
    class_counts: Tensor | Sequence[float], class_weight: Tensor | Sequence[float] | None, k: int | None = None
) -> Tensor:
    """``class_weight`` if given (IB+CB), else the inverse-frequency weights of ``class_counts``; both (K,)."""
    k = check_class_counts(class_counts, k).numel()
    weight = check_class_weight(class_weight, k)
    return _class_weights(class_counts, "inverse") if weight is None else weight


def ib_loss(
    logits: Tensor,
    target: Tensor,
    *,
    features: Tensor,
    class_counts: Tensor | Sequence[float],
    alpha: float = 1000.0,
    epsilon: float = 1e-3,
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Influence-balanced loss (Park et al., 2021, "Influence-Balanced Loss for Imbalanced Visual Classification").

    .. math:: l_i = w_{y_i} \frac{\alpha \, (-\log p_{y_i})}{\lVert p_i - e_{y_i} \rVert_1 \lVert h_i \rVert_1
              + \epsilon}, \quad \lVert p_i - e_{y_i} \rVert_1 = 2 (1 - p_{y_i})

    h are the penultimate-layer ``features``. The influence factor is **not** detached: gradients flow through
    p and h (as in the authors' code). :math:`w_k = K n_k^{-1} / \sum_j n_j^{-1}` unless ``class_weight`` is
    given (IB+CB: pass ``class_weights(counts, "effective_number")``). Meant after a cross-entropy warm-up,
    which the engine chooses per epoch; the loss holds no epoch state.

    Args:
        logits: raw scores z, shape (N, K), floating.
        target: class indices, shape (N,), int64 in [0, K).
        features: penultimate-layer activations h, shape (N, D).
        class_counts: training images per class n, shape (K,), clamped to >= 1.
        alpha: scale of the influence weight, > 0.
        epsilon: added to the denominator, > 0.
        class_weight: per-class weight w, shape (K,); replaces the inverse-frequency default.
        reduction: ``"none"``, ``"mean"`` (sum / N) or ``"sum"``.

    Shape:
        Output: (N,) for ``"none"``, else ().

    Example:
        >>> z, y, h = torch.zeros(2, 2), torch.tensor([0, 1]), torch.ones(2, 3)
        >>> ib_loss(z, y, features=h, class_counts=torch.tensor([1, 1]), alpha=1.0)
        tensor(0.2310)
    """
    k = check_logits_target(logits, target)
    features = check_features(features, logits.shape[0], "ib")
    alpha = check_param("alpha", alpha, gt=0.0)
    epsilon = check_param("epsilon", epsilon, gt=0.0)
    weight = _ib_weight(class_counts, class_weight, k).to(logits.device)
    return _ib(logits, target, features, weight, alpha, epsilon, None, check_reduction(reduction))


@register(
    "ib",
    description="Influence-balanced loss: cross-entropy divided by the sample's influence (Park et al., 2021).",
    needs_class_counts=True,
    needs_features=True,
)
class IBLoss(WeightedLoss):
    """Module form of :func:`ib_loss`; the weights w are the ``class_weight`` buffer (K,).

    Example:
        >>> loss = IBLoss(class_counts=torch.tensor([1, 1]), alpha=1.0)
        >>> loss(torch.zeros(2, 2), torch.tensor([0, 1]), features=torch.ones(2, 3))
        tensor(0.2310)
    """

    hparams = ("alpha", "epsilon")
    class_weight: Tensor

    def __init__(
        self,
        *,
        class_counts: Tensor | Sequence[float],
        alpha: float = 1000.0,
        epsilon: float = 1e-3,
        class_weight: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_weight=_ib_weight(class_counts, class_weight), reduction=reduction)
        self.alpha = check_param("alpha", alpha, gt=0.0)
        self.epsilon = check_param("epsilon", epsilon, gt=0.0)

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` (N, K) against ``target`` (N,), given ``features`` (N, D)."""
        self._check(logits, target)
        features = check_features(features, logits.shape[0], "ib")
        return _ib(logits, target, features, self.class_weight, self.alpha, self.epsilon, None, self.reduction)
