"""``mlp``: a multi-layer perceptron on flattened inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from lt_core.models.layers import check_bool, classifier
from lt_core.models.registry import register_model

__all__ = ["MLP", "mlp"]


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout] per hidden size -> classifier.

    Args:
        in_features: Size of the flattened input.
        num_classes: ``K``.
        hidden_sizes: Width of each hidden layer; empty gives a linear model on the raw input.
        dropout: Dropout probability after each hidden activation (0 disables it).
        normalized: Cosine classifier (:class:`NormedLinear`) instead of ``nn.Linear``.

    Shape:
        - Input: ``(N, *input_shape)``.
        - Output: ``(logits (N, K), features (N, D))``, features being the classifier's input (the last hidden
          activation after dropout; ``D = hidden_sizes[-1]``, or ``in_features`` without hidden layers).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (128,),
        dropout: float = 0.0,
        normalized: bool = False,
    ) -> None:
        """Build the layers."""
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.classifier = classifier(width, num_classes, normalized)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(logits, features)``."""
        features = self.body(x)
        return self.classifier(features), features


@register_model("mlp", description="MLP on flattened inputs (ReLU, optional dropout and cosine classifier)")
def mlp(
    num_classes: int,
    input_shape: Sequence[int],
    *,
    hidden_sizes: Sequence[int] = (128,),
    dropout: float = 0.0,
    normalized: bool = False,
) -> MLP:
    """Build an :class:`MLP` for inputs of ``input_shape``.

    Raises:
        ValueError: naming ``hidden_sizes``, ``dropout`` or ``normalized`` when invalid.
    """
    if (
        isinstance(hidden_sizes, str)
        or not isinstance(hidden_sizes, Sequence)
        or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden_sizes)
    ):
        raise ValueError(f"hidden_sizes must be a list of positive ints, got {hidden_sizes!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return MLP(
        math.prod(input_shape), num_classes, list(hidden_sizes), float(dropout), check_bool("normalized", normalized)
    )
