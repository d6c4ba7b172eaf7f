"""Model registry: ``create_model(name, num_classes, input_shape, **params)``.

Errors:
    ``KeyError``    unknown model name (lists the known ones).
    ``ValueError``  unknown or invalid parameter, or an input shape the model cannot take; names the culprit.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["MODELS", "ModelInfo", "create_model", "register_model"]


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry.

    Attributes:
        name: Registry key.
        build: ``build(num_classes, input_shape, **params) -> nn.Module``; the module's forward returns
            ``(logits (N, K), features (N, D))``.
        defaults: Every keyword parameter the builder accepts, with its default.
        description: One line for catalogues.
    """

    name: str
    build: Callable[..., nn.Module]
    defaults: dict[str, Any]
    description: str = ""


MODELS: dict[str, ModelInfo] = {}


def register_model(
    name: str, *, description: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``build(num_classes, input_shape, *, **params)``; defaults come from its signature.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def decorator(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        # Tuple defaults (immutable in the signature) are listed as JSON-style lists.
        defaults = {
            p.name: list(p.default) if isinstance(p.default, tuple) else p.default
            for p in inspect.signature(build).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        MODELS[name] = ModelInfo(name, build, defaults, description)
        return build

    return decorator


def create_model(name: str, num_classes: int, input_shape: Sequence[int], **params: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: A key of :data:`MODELS`.
        num_classes: ``K``, the number of logits.
        input_shape: Shape of one input (without the batch dimension), e.g. ``(64,)`` or ``(3, 32, 32)``.
        **params: Overrides of the model's defaults.

    Returns:
        A module whose ``forward(x)`` returns ``(logits (N, K), features (N, D))``.

    Raises:
        KeyError: unknown ``name``.
        ValueError: unknown or invalid parameters.

    Example:
        >>> import torch
        >>> model = create_model("mlp", 3, (8,), hidden_sizes=[16])
        >>> [t.shape for t in model(torch.randn(2, 8))]
        [torch.Size([2, 3]), torch.Size([2, 16])]
    """
    if isinstance(name, str) and name.startswith("timm:"):  # timm:<arch>: the "timm" entry, with its arch
        name, params = "timm", {**params, "arch": name[len("timm:") :]}
    try:
        info = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {sorted(MODELS)}") from None
    unknown = sorted(set(params) - set(info.defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for model {name!r}; allowed parameters: {sorted(info.defaults)}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    return info.build(num_classes, shape, **{**copy.deepcopy(info.defaults), **params})
