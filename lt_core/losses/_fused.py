r"""Cross-entropy of per-class transformed logits, with a hand-written backward.

``cdt``, ``ldam`` and ``seql`` are cross-entropy on a transform of the logits (a per-class scale, a margin at the
target, dropped logits). Through autograd each transform costs extra passes over (N, K) in the backward pass;
here the backward is one fused pass, :math:`\partial l / \partial z = s \odot (\mathrm{softmax}(x) - e_y) g`.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._utils import Reduction, weight_and_reduce

__all__ = ["shifted_cross_entropy", "transformed_cross_entropy"]


class _TransformedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        target: Tensor,
        scale: Tensor | float | None,
        target_offset: Tensor | None,
        bias: Tensor | None,
    ) -> Tensor:
        x = logits if scale is None else logits * scale  # (N, K)
        if target_offset is not None:
            x = x.clone() if x is logits else x  # never write into the caller's tensor
            x.scatter_add_(1, target[:, None], target_offset[:, None])
        if bias is not None:
            x = x + bias  # -inf entries drop their logit from the softmax: a masked logsumexp
        log_prob = x.log_softmax(-1)  # (N, K)
        ctx.save_for_backward(log_prob, target)
        ctx.scale = scale
        return -log_prob.gather(1, target[:, None]).squeeze(1)  # (N,)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        log_prob, target = ctx.saved_tensors
        grad = grad[:, None].to(log_prob.dtype)  # (N, 1)
        # softmax(x) as the softmax of log_prob (whose logsumexp is 0), not log_prob.exp(): torch's softmax kernel
        # is several times faster than its exp on -inf (dropped logits) and very negative log-probabilities.
        grad_x = log_prob.softmax(-1).mul_(grad)  # softmax(x) g, exactly 0 where a logit was dropped
        grad_x.scatter_add_(1, target[:, None], -grad)
        if ctx.scale is not None:
            grad_x.mul_(ctx.scale)
        return grad_x, None, None, None, None


def transformed_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    scale: Tensor | float | None = None,
    target_offset: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    r"""Per-sample :math:`-\log \mathrm{softmax}(x_i)_{y_i}`, :math:`x = s \odot z + o \, e_y + b`.

    No input checks: callers have validated the shapes. Differentiable once, in ``logits`` only (the
    transform's parameters are constants).

    Args:
        logits: z, shape (N, K), floating.
        target: y, shape (N,), int64 in [0, K).
        scale: s, a float or shape (K,) in the dtype of ``logits``; None for 1.
        target_offset: o, added to the target logit after scaling, shape (N,) in the dtype of ``logits``.
        bias: b, added last, shape (K,) or (N, K) in the dtype of ``logits``; ``-inf`` drops a logit from the
            softmax (never at the target).

    Returns:
        The per-sample loss, shape (N,).
    """
    # torch leaves Function.apply untyped; it returns what forward returns, a Tensor.
    out = _TransformedCrossEntropy.apply(logits, target, scale, target_offset, bias)  # type: ignore[no-untyped-call]
    return cast(Tensor, out)


def shifted_cross_entropy(
    logits: Tensor, target: Tensor, shift: Tensor, class_weight: Tensor | None, reduction: Reduction
) -> Tensor:
    """Cross-entropy of ``logits + shift`` (shift (K,), in the dtype of ``logits``), weighted and reduced."""
    return weight_and_reduce(transformed_cross_entropy(logits, target, bias=shift), target, class_weight, reduction)
