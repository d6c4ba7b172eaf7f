"""Building blocks shared by the models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NormedLinear", "check_bool"]


class NormedLinear(nn.Module):
    r"""Cosine classifier: ``logits = normalize(x) @ normalize(W).T``, each in [-1, 1].

    The classifier of LDAM-DRW (Cao et al., 2019); the loss scales the logits (``s``). Without bias.

    Args:
        in_features: ``D``.
        out_features: ``K``.

    Shape:
        - Input: ``(N, D)``.
        - Output: ``(N, K)``.

    Example:
        >>> logits = NormedLinear(4, 3)(torch.randn(2, 4))
        >>> bool(logits.abs().max() <= 1)
        True
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        """Create the ``(out_features, in_features)`` weight, rows initialised to random unit vectors."""
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # Same layout as nn.Linear; rows start as random unit vectors (the scale is irrelevant after normalising).
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        with torch.no_grad():
            self.weight.uniform_(-1, 1)
            self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def forward(self, x: Tensor) -> Tensor:
        """Cosine similarity of each input with each class weight."""
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()

    def extra_repr(self) -> str:
        """Sizes, as nn.Linear shows them."""
        return f"in_features={self.in_features}, out_features={self.out_features}"


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool, else raise ValueError naming ``name``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def classifier(in_features: int, num_classes: int, normalized: bool) -> nn.Module:
    """``NormedLinear`` when ``normalized`` else ``nn.Linear``."""
    return NormedLinear(in_features, num_classes) if normalized else nn.Linear(in_features, num_classes)
