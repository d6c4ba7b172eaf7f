"""Softmax equalization loss (SEQL)."""

from __future__ import annotations

import math
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
from .ce import _ce
from .registry import register

__all__ = ["SEQLLoss", "seql_loss"]

_INT32_MIN = -(2**31)


def _tail_mask(class_counts: Tensor | Sequence[float], lambda_: float, num_classes: int | None = None) -> Tensor:
    counts = check_class_counts(class_counts, num_classes)  # float64, >= 1
    return counts / counts.sum() < lambda_  # (K,) bool, [f_k < lambda]


# Below this probability of the rarer outcome, drawing the gaps between rare outcomes (one float each) is cheaper
# than 32 random bits for every element; above it, the bits are.
_SPARSE_BELOW = 0.25


def _rare_positions(total: int, p: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Sorted positions in [0, total) of the successes of ``total`` independent Bernoulli(p) trials, 0 < p < 1.

    The gaps between successes are Geometric(p): ``floor(log(1 - u) / log(1 - p)) + 1`` with u uniform. Drawn in
    chunks sized to cover ``total`` unless Binomial(total, p) exceeds its mean by 10 standard deviations (a chance
    below 1e-20). Positions past the end are returned as ``total`` (callers write them to a spare slot), so the
    result has a fixed length: no host sync. Only on the CPU, where reading a value is free, does the draw continue
    in the (practically impossible) case that a chunk falls short.
    """
    log_q = math.log1p(-p)
    expected = total * p
    chunk = int(expected + 10.0 * math.sqrt(expected) + 64)
    parts, last = [], -1
    while True:
        u = torch.rand(chunk, generator=generator, device=device)
        gaps = u.neg_().log1p_().div_(log_q).long().add_(1)  # (chunk,), >= 1; in place: no temporaries
        positions = gaps.cumsum_(0).add_(last)
        parts.append(positions)
        if device.type != "cpu":
            break
        last = int(positions[-1])
        if last >= total - 1:
            break
    positions = torch.cat(parts) if len(parts) > 1 else parts[0]
    return positions.clamp_max_(total)


def drop_mask(tail: Tensor, target: Tensor, gamma: float, generator: torch.Generator | None = None) -> Tensor:
    r"""Draw the SEQL mask :math:`\beta_{ik} [f_k < \lambda] (1 - y_{ik})` as a bool tensor (N, K).

    :math:`\beta_{ik} \sim \mathrm{Bernoulli}(\gamma)` independently for every (sample, tail class) element (the
    others need no draw). Two exact ways to draw, chosen for speed by the rarer outcome's probability
    :math:`q = \min(\gamma, 1 - \gamma)`:

    - :math:`q < 0.25` (e.g. the default :math:`\gamma = 0.9`): the positions of the rare outcome, from
      Geometric(q) gaps, one ``torch.rand`` float per rare element instead of one draw per element.
    - otherwise: 32 uniform bits per element (``Tensor.random_`` over the full int64 range, viewed as int32),
      :math:`\beta = [u < \lfloor \gamma 2^{32} \rfloor - 2^{31}]`.

    Both match :math:`\gamma` to float32 resolution or better, like ``torch.rand(N, K) < gamma``. The draw is
    reproducible with a seeded ``generator`` (on the device of ``tail``); ``gamma`` 0 or 1 draws nothing.

    Args:
        tail: [f_k < lambda] per class, shape (K,), bool.
        target: class indices, shape (N,), int64; never masked.
        gamma: the Bernoulli probability, in [0, 1].
        generator: optional source of randomness.

    Returns:
        True where the class's logit is dropped from the sample's softmax, shape (N, K).

    Example:
        >>> drop_mask(torch.tensor([False, True, True]), torch.tensor([0, 1]), gamma=1.0)
        tensor([[False,  True,  True],
                [False, False,  True]])
    """
    tail_columns = tail.nonzero().squeeze(1)  # (T,); the modules keep these as a buffer (no host sync per call)
    return _draw(tail, tail_columns, target, gamma, generator, drop=True, keep=False, dtype=torch.bool)


def _draw(
    tail: Tensor,
    tail_columns: Tensor,
    target: Tensor,
    gamma: float,
    generator: torch.Generator | None,
    *,
    drop: float | bool,
    keep: float | bool,
    dtype: torch.dtype,
) -> Tensor:
    """``drop_mask`` written as ``drop`` / ``keep`` values of ``dtype``: bool for the mask, (-inf, 0) for a bias.

    ``tail_columns`` (T,) are the indices where ``tail`` is True. No host sync: every shape is known in advance.
    """
    n, k = target.numel(), tail.numel()
    tail_values = torch.where(tail, drop, keep).to(dtype)  # (K,): every tail logit dropped
    rare = min(gamma, 1.0 - gamma)
    if rare <= 0.0 or rare >= _SPARSE_BELOW:
        if gamma <= 0.0:
            values = torch.full((n, k), keep, dtype=dtype, device=tail.device)
        elif gamma >= 1.0:
            values = tail_values.expand(n, k).clone()
        else:
            words = torch.empty((n * k + 1) // 2, dtype=torch.int64, device=tail.device)
            words.random_(-(2**63), None, generator=generator)  # full 64-bit range: every bit uniform
            bits = words.view(torch.int32)[: n * k].view(n, k)
            threshold = torch.where(tail, int(gamma * 2**32) + _INT32_MIN, _INT32_MIN).to(torch.int32)  # (K,)
            dropped = bits < threshold
            values = dropped if dtype == torch.bool else torch.where(dropped, drop, keep).to(dtype)
    else:
        t = tail_columns.numel()
        # start from the likely outcome and flip the rare positions of the flattened (N, T) tail grid; one spare row
        # takes the positions past the end (see _rare_positions)
        drop_is_rare = gamma < 0.5
        if drop_is_rare:
            values = torch.full((n + 1, k), keep, dtype=dtype, device=tail.device)
        else:
            values = tail_values.expand(n + 1, k).clone()
        if n * t > 0:
            positions = _rare_positions(n * t, rare, generator, tail.device)
            if t < k:  # (sample, t-th tail class) -> flat index into (N + 1, K)
                positions = positions.div(t, rounding_mode="floor") * k + tail_columns[positions % t]
            values.view(-1).index_fill_(0, positions, drop if drop_is_rare else keep)
        values = values[:n]
    return values.scatter_(1, target[:, None], keep)


def _seql(
    logits: Tensor,
    target: Tensor,
    tail: Tensor,
    tail_columns: Tensor,
    gamma: float,
    generator: torch.Generator | None,
    class_weight: Tensor | None,
    reduction: Reduction,
) -> Tensor:
    if gamma == 0.0:  # nothing is ever dropped: plain cross-entropy, and no draw
        return _ce(logits, target, class_weight, reduction)
    # the mask as an additive bias (-inf where dropped, else 0): adding it is cheaper than torch.where on a bool mask
    bias = _draw(tail, tail_columns, target, gamma, generator, drop=float("-inf"), keep=0.0, dtype=logits.dtype)
    return weight_and_reduce(transformed_cross_entropy(logits, target, bias=bias), target, class_weight, reduction)


def seql_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: Tensor | Sequence[float],
    lambda_: float = 0.05,
    gamma: float = 0.9,
    generator: torch.Generator | None = None,
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Softmax equalization loss (Tan et al., 2020, "Equalization Loss for Long-Tailed Object Recognition").

    .. math:: l_i = -z_{i,y_i} + \log \sum_k w_{ik} e^{z_{ik}}, \quad
              w_{ik} = 1 - \beta_{ik} [f_k < \lambda] (1 - y_{ik}), \quad f_k = n_k / \textstyle\sum_j n_j

    with :math:`\beta_{ik} \sim \mathrm{Bernoulli}(\gamma)` drawn per element (see :func:`drop_mask`): the
    logits of rare classes are dropped, at random, from the softmax of the other classes' samples, so those
    samples do not push the rare classes down. Computed as a masked logsumexp. ``gamma=0`` or ``lambda_=0``
    give cross-entropy. Random: pass a seeded ``generator`` to reproduce a draw.

    Args:
        logits: raw scores z, shape (N, K), floating.
        target: class indices, shape (N,), int64 in [0, K).
        class_counts: training images per class n, shape (K,), clamped to >= 1.
        lambda_: frequency threshold below which a class is a tail class, in [0, 1].
        gamma: probability of dropping a tail logit, in [0, 1].
        generator: optional ``torch.Generator`` for the draw, on the device of ``logits``.
        class_weight: optional per-class weight w, shape (K,).
        reduction: ``"none"``, ``"mean"`` (sum / N) or ``"sum"``.

    Shape:
        Output: (N,) for ``"none"``, else ().

    Example:
        >>> z, y = torch.zeros(2, 3), torch.tensor([0, 0])
        >>> seql_loss(z, y, class_counts=torch.tensor([8, 1, 1]), lambda_=0.5, gamma=1.0)
        tensor(0.)
    """
    k = check_logits_target(logits, target)
    lambda_ = check_param("lambda_", lambda_, ge=0.0, le=1.0)
    gamma = check_param("gamma", gamma, ge=0.0, le=1.0)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"expected generator to be a torch.Generator, got {type(generator).__name__}")
    tail = _tail_mask(class_counts, lambda_, k)
    tail_columns = tail.nonzero().squeeze(1)  # on the device of class_counts, before moving: no device sync
    weight = check_class_weight(class_weight, k)
    return _seql(
        logits,
        target,
        tail.to(logits.device),
        tail_columns.to(logits.device),
        gamma,
        generator,
        weight,
        check_reduction(reduction),
    )


@register(
    "seql",
    description="Softmax equalization loss: rare-class logits randomly dropped from others' softmax (Tan et al.).",
    needs_class_counts=True,
)
class SEQLLoss(WeightedLoss):
    """Module form of :func:`seql_loss`; ``[f_k < lambda]`` is the ``tail_mask`` buffer (K,), bool.

    The module holds no generator: each call draws from the default generator of the logits' device, so
    ``.to(device)`` moves everything it needs, ``torch.manual_seed`` reproduces a draw and a checkpoint of the CPU
    and CUDA RNG states (``lt_core.engine.save_checkpoint``) resumes the same sequence of masks. Pass a generator
    to :func:`seql_loss` to control one draw.

    Example:
        >>> loss = SEQLLoss(class_counts=torch.tensor([8, 1, 1]), lambda_=0.5, gamma=1.0)
        >>> loss(torch.zeros(2, 3), torch.tensor([0, 0]))
        tensor(0.)
    """

    hparams = ("lambda_", "gamma")
    tail_mask: Tensor
    tail_columns: Tensor

    def __init__(
        self,
        *,
        class_counts: Tensor | Sequence[float],
        lambda_: float = 0.05,
        gamma: float = 0.9,
        class_weight: Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_weight=class_weight, reduction=reduction)
        self.lambda_ = check_param("lambda_", lambda_, ge=0.0, le=1.0)
        self.gamma = check_param("gamma", gamma, ge=0.0, le=1.0)
        tail = _tail_mask(class_counts, self.lambda_)
        self.register_buffer("tail_mask", tail)
        # (T,) indices of the tail classes, found once here rather than by a nonzero() (a host sync) per call
        self.register_buffer("tail_columns", tail.nonzero().squeeze(1), persistent=False)

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` (N, K) against ``target`` (N,); a fresh draw of the mask per call."""
        self._check(logits, target, class_counts=self.tail_mask)
        return _seql(
            logits, target, self.tail_mask, self.tail_columns, self.gamma, None, self.class_weight, self.reduction
        )
