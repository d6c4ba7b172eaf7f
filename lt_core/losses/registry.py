"""The loss registry: ``LOSSES`` maps a name to its ``LossInfo``; ``create_loss`` builds a module by name.

A loss registers itself with the ``register`` decorator on its module class; its hyper-parameters and their
defaults are read from the keyword parameters of the class's ``__init__``, so they are written once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import Tensor, nn

from ._utils import Reduction, check_class_counts, check_class_weight, check_reduction

__all__ = ["LOSSES", "LossInfo", "create_loss", "register"]

# Keyword parameters of a loss module that are not its hyper-parameters: create_loss passes them itself.
_COMMON_PARAMS = frozenset({"class_counts", "class_weight", "reduction"})


@dataclass(frozen=True)
class LossInfo:
    """What the rest of the code needs to know about a registered loss.

    Attributes:
        name: registry key, e.g. ``"focal"``.
        build: the module class; ``build(class_weight=..., reduction=..., **params)``, plus
            ``class_counts=...`` when ``needs_class_counts``.
        needs_class_counts: the loss needs ``class_counts`` (K,) (training images per class).
        needs_features: ``forward`` needs ``features`` (N, D), the penultimate-layer activations.
        defaults: hyper-parameter name -> default value.
        description: one line for catalogs.
    """

    name: str
    build: Callable[..., nn.Module]
    needs_class_counts: bool = False
    needs_features: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


LOSSES: dict[str, LossInfo] = {}

_M = TypeVar("_M", bound=type[nn.Module])


def _keyword_params(build: Callable[..., nn.Module]) -> dict[str, inspect.Parameter]:
    return {
        name: param
        for name, param in inspect.signature(build).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    }


def register(
    name: str, *, description: str, needs_class_counts: bool = False, needs_features: bool = False
) -> Callable[[_M], _M]:
    """Class decorator adding a loss module to ``LOSSES``.

    Raises:
        ValueError: ``name`` is already registered, or a hyper-parameter has no default.
    """

    def decorator(cls: _M) -> _M:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        params = _keyword_params(cls)
        defaults = {}
        for pname, param in params.items():
            if pname in _COMMON_PARAMS:
                continue
            if param.default is inspect.Parameter.empty:
                raise ValueError(f"hyper-parameter {pname!r} of loss {name!r} needs a default")
            defaults[pname] = param.default
        LOSSES[name] = LossInfo(name, cls, needs_class_counts, needs_features, defaults, description)
        return cls

    return decorator


def create_loss(
    name: str,
    *,
    class_counts: Tensor | Sequence[float] | None = None,
    class_weight: Tensor | Sequence[float] | None = None,
    reduction: Reduction = "mean",
    **params: Any,
) -> nn.Module:
    """Build the loss module registered as ``name``.

    Args:
        name: a key of ``LOSSES``.
        class_counts: training images per class (K,); required by losses with ``needs_class_counts``, validated
            and otherwise ignored by the others (so a caller may always pass them).
        class_weight: optional per-class weight (K,); multiplies each sample's loss by ``class_weight[y]``.
        reduction: ``"none"``, ``"mean"`` (sum / N) or ``"sum"``.
        **params: the loss's hyper-parameters (see ``LOSSES[name].defaults``), e.g. ``gamma=2.0``.

    Returns:
        The module; call it as ``loss(logits (N, K), target (N,), features=(N, D) or None)``.

    Raises:
        KeyError: unknown ``name`` (the message lists the known ones).
        TypeError: a parameter the loss does not take (the message lists the allowed ones).
        ValueError: missing or invalid ``class_counts``, a ``class_weight`` of another length, a bad ``reduction``
            or an out-of-range parameter.

    Example:
        >>> loss = create_loss("focal", gamma=2.0)
        >>> loss(torch.zeros(2, 3), torch.tensor([0, 2]))
        tensor(0.4883)
    """
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    info = LOSSES[name]
    allowed = sorted(set(_keyword_params(info.build)) - _COMMON_PARAMS)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TypeError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for loss {name!r}; "
            f"allowed: {', '.join(allowed) if allowed else 'none'}"
        )
    check_reduction(reduction)
    if info.needs_class_counts and class_counts is None:
        raise ValueError(f"loss {name!r} needs class_counts (training images per class, shape (K,))")
    if class_counts is not None:  # validated even where ignored; class_weight must then have the same K
        check_class_weight(class_weight, check_class_counts(class_counts).numel())
    kwargs = dict(params, class_weight=class_weight, reduction=reduction)
    if info.needs_class_counts:
        kwargs["class_counts"] = class_counts
    return info.build(**kwargs)
