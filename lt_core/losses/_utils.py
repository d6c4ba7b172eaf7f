"""Shared helpers for the losses: reduction, input checks, parameter checks and the common module base.

Every loss validates its inputs with these helpers so that the error messages are the same everywhere
(kornia style: ``"expected target of shape (N,)=(8,), got (8, 1)"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from numbers import Real
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "Reduction",
    "WeightedLoss",
    "apply_reduction",
    "check_class_counts",
    "check_class_weight",
    "check_features",
    "check_logits_target",
    "check_num_classes",
    "check_param",
    "check_reduction",
    "weight_and_reduce",
]

Reduction = Literal["none", "mean", "sum"]
_REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")


def check_reduction(reduction: str) -> Reduction:
    """Return ``reduction`` if it is one of ``"none"``, ``"mean"``, ``"sum"``, else raise ``ValueError``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"expected reduction in {_REDUCTIONS}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def apply_reduction(loss: Tensor, reduction: Reduction) -> Tensor:
    """Reduce a per-sample loss.

    Args:
        loss: per-sample loss, shape (N,).
        reduction: ``"none"`` returns ``loss``; ``"sum"`` its sum; ``"mean"`` its sum divided by N (also when the
            samples carry class weights; an empty batch gives ``nan``, like ``torch.mean``).

    Raises:
        ValueError: for any other ``reduction``.
    """
    check_reduction(reduction)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def weight_and_reduce(loss: Tensor, target: Tensor, class_weight: Tensor | None, reduction: Reduction) -> Tensor:
    """Multiply the per-sample ``loss`` (N,) by ``class_weight[target]`` (if given), then reduce.

    ``"mean"`` divides by N, not by the summed weights (``F.cross_entropy(weight=...)`` does the latter).
    """
    if class_weight is not None:  # the functional forms take a weight on any device: index it on the target's
        loss = loss * class_weight.to(loss.device, loss.dtype)[target]
    return apply_reduction(loss, reduction)


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def check_logits_target(logits: Tensor, target: Tensor) -> int:
    """Check ``logits`` (N, K) floating and ``target`` (N,) int64 in [0, K); return K.

    Raises:
        TypeError: a non-tensor, non-floating logits or a target that is not int64.
        ValueError: a wrong shape, different devices, no classes, or target values outside [0, K) (CPU tensors;
            on other devices the values are checked by a device-side assertion, without a host sync).
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"expected logits to be a Tensor, got {type(logits).__name__}")
    if not isinstance(target, Tensor):
        raise TypeError(f"expected target to be a Tensor, got {type(target).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape (N, K), got {_shape(logits)}")
    if not logits.is_floating_point():
        raise TypeError(f"expected logits of a floating dtype, got {logits.dtype}")
    n, k = logits.shape
    if k == 0:
        raise ValueError(f"expected logits with at least one class, got {_shape(logits)}")
    if target.shape != (n,):
        raise ValueError(f"expected target of shape (N,)=({n},), got {_shape(target)}")
    if target.dtype != torch.int64:
        raise TypeError(f"expected target of dtype torch.int64, got {target.dtype}")
    if target.device != logits.device:
        raise ValueError(f"expected target on the device of logits ({logits.device}), got {target.device}")
    if n > 0:
        if target.device.type == "cpu":
            # Reading values is free on the CPU: one pass for both bounds, N elements, not N*K.
            lo, hi = torch.stack(torch.aminmax(target)).tolist()
            if lo < 0 or hi >= k:
                raise ValueError(f"expected target values in [0, K)=[0, {k}), got min {lo} and max {hi}")
        else:
            # On an accelerator reading values is a host sync every step: check on the device instead; a bad target
            # fails the next call that synchronises, with this message (a device-side assertion on CUDA).
            torch._assert_async(((target >= 0) & (target < k)).all(), f"expected target values in [0, K)=[0, {k})")
    return k


def check_num_classes(name: str, stat: Tensor | None, num_classes: int) -> None:
    """Raise ``ValueError`` if a per-class tensor ``stat`` (K,) does not have ``num_classes`` entries."""
    if stat is not None and stat.shape != (num_classes,):
        raise ValueError(f"expected {name} of shape (K,)=({num_classes},), got {_shape(stat)}")


def _as_vector(name: str, values: Tensor | Sequence[float]) -> Tensor:
    if isinstance(values, Tensor):
        tensor = values
    elif isinstance(values, Sequence) and not isinstance(values, str):
        tensor = torch.as_tensor(values)
    else:
        raise TypeError(f"expected {name} to be a Tensor or a sequence of numbers, got {type(values).__name__}")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"expected {name} of a real dtype, got {tensor.dtype}")
    if tensor.ndim != 1:
        raise ValueError(f"expected {name} of shape (K,), got {_shape(tensor)}")
    if tensor.numel() == 0:
        raise ValueError(f"expected {name} with at least one class, got {_shape(tensor)}")
    return tensor


def check_class_counts(class_counts: Tensor | Sequence[float], num_classes: int | None = None) -> Tensor:
    """Validate ``class_counts`` (K,) and return them as float64, clamped to >= 1, on their device.

    Args:
        class_counts: number of training images per class; non-negative and finite.
        num_classes: if given, the K that ``class_counts`` must match.

    Raises:
        TypeError: not a tensor or sequence of real numbers.
        ValueError: not 1-D, empty, of the wrong length, negative or not finite.
    """
    counts = _as_vector("class_counts", class_counts).to(torch.float64)
    if num_classes is not None:
        check_num_classes("class_counts", counts, num_classes)
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise ValueError(f"expected class_counts finite and >= 0, got {counts.tolist()}")
    return counts.clamp_min(1.0)


def check_class_weight(class_weight: Tensor | Sequence[float] | None, num_classes: int | None = None) -> Tensor | None:
    """Validate an optional ``class_weight`` (K,) (finite, >= 0) and return it as a floating tensor.

    Raises:
        TypeError: not a tensor or sequence of real numbers.
        ValueError: not 1-D, empty, of the wrong length, negative or not finite.
    """
    if class_weight is None:
        return None
    weight = _as_vector("class_weight", class_weight)
    if not weight.is_floating_point():
        weight = weight.to(torch.get_default_dtype())
    if num_classes is not None:
        check_num_classes("class_weight", weight, num_classes)
    if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        raise ValueError(f"expected class_weight finite and >= 0, got {weight.tolist()}")
    return weight


def check_features(features: Tensor | None, num_samples: int, loss: str) -> Tensor:
    """Check the penultimate-layer ``features`` (N, D) that ``loss`` needs.

    Raises:
        ValueError: missing, not 2-D or of a batch size other than N.
        TypeError: not a floating tensor.
    """
    if features is None:
        raise ValueError(f"loss {loss!r} needs features (N, D), the penultimate-layer activations; got None")
    if not isinstance(features, Tensor):
        raise TypeError(f"expected features to be a Tensor, got {type(features).__name__}")
    if features.ndim != 2 or features.shape[0] != num_samples:
        raise ValueError(f"expected features of shape (N, D)=({num_samples}, D), got {_shape(features)}")
    if not features.is_floating_point():
        raise TypeError(f"expected features of a floating dtype, got {features.dtype}")
    return features


def check_param(
    name: str,
    value: float,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> float:
    """Return the hyper-parameter ``value`` as a float after checking its type and range.

    Raises:
        TypeError: not a real number (``bool`` is refused).
        ValueError: not finite or outside the range given by ``ge``/``gt``/``le``/``lt``.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"expected {name} to be a real number, got {type(value).__name__}")
    value = float(value)
    bounds = [(op, bound) for op, bound in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if bound is not None]
    out_of_range = (
        (ge is not None and value < ge)
        or (gt is not None and value <= gt)
        or (le is not None and value > le)
        or (lt is not None and value >= lt)
    )
    if not math.isfinite(value) or out_of_range:
        rng = " and ".join(["finite", *(f"{op} {bound}" for op, bound in bounds)])
        raise ValueError(f"expected {name} {rng}, got {value}")
    return value


class WeightedLoss(nn.Module):
    """Base of the loss modules: holds ``reduction`` and the optional ``class_weight`` (K,) buffer.

    Subclasses list their hyper-parameters in ``hparams`` (for ``repr``) and register every class statistic
    as a buffer, so that ``.to(device)`` and ``state_dict()`` carry them.
    """

    hparams: tuple[str, ...] = ()
    class_weight: Tensor | None

    def __init__(self, *, class_weight: Tensor | Sequence[float] | None = None, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction: Reduction = check_reduction(reduction)
        weight = check_class_weight(class_weight)
        self.register_buffer("class_weight", None if weight is None else weight.to(torch.get_default_dtype()))

    def __call__(
        self, logits: Tensor, target: Tensor, *args: Any, features: Tensor | None = None, **kwargs: Any
    ) -> Tensor:
        """Compute the loss in float32 whatever the inputs' precision or the autocast context.

        bf16 keeps 8 significant bits and fp16 overflows past 65504: log-softmax, margins, logit adjustments and the
        IB weight ``1 / (|p - y| * ||h||)`` lose the small differences the long-tail terms are made of. bf16/fp16
        ``logits`` and ``features`` are upcast (gradients flow back in their own dtype) and autocast is off inside;
        the result is rounded once to the logits' dtype (the engine passes float32 logits, and gets a float32 loss).
        """
        if not isinstance(logits, Tensor):  # the checks inside name the problem
            return super().__call__(logits, target, *args, features=features, **kwargs)
        device = logits.device.type
        off = torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext()
        dtype = logits.dtype
        with off:
            if dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            if features is not None and features.dtype in (torch.float16, torch.bfloat16):
                features = features.float()
            loss: Tensor = super().__call__(logits, target, *args, features=features, **kwargs)
        return loss.to(dtype) if dtype in (torch.float16, torch.bfloat16) else loss

    def _check(self, logits: Tensor, target: Tensor, **stats: Tensor | None) -> int:
        """Check the inputs and that each per-class buffer in ``stats`` has K entries; return K."""
        k = check_logits_target(logits, target)
        check_num_classes("class_weight", self.class_weight, k)
        for name, stat in stats.items():
            check_num_classes(name, stat, k)
        return k

    def extra_repr(self) -> str:
        """Show the hyper-parameters and the reduction."""
        return ", ".join(
            [f"{name}={getattr(self, name)!r}" for name in self.hparams] + [f"reduction={self.reduction!r}"]
        )
