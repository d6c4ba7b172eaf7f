"""Per-class weights from class counts, for the ``class_weight`` argument of every loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ._utils import check_class_counts, check_param

__all__ = ["WeightScheme", "class_weights"]

WeightScheme = Literal["inverse", "effective_number"]


def class_weights(
    class_counts: Tensor | Sequence[float], scheme: WeightScheme = "inverse", beta: float = 0.9999
) -> Tensor:
    r"""Class weights (K,) normalised to sum to K.

    - ``"inverse"``: :math:`w_k \propto 1 / n_k`.
    - ``"effective_number"`` (Cui et al., 2019, "Class-Balanced Loss Based on Effective Number of Samples"):
      :math:`w_k \propto (1 - \beta) / (1 - \beta^{n_k})`; ``beta=0`` gives uniform weights and
      ``beta -> 1`` tends to ``"inverse"``.

    Counts are clamped to >= 1, so an empty class weighs like a class of one image.

    Args:
        class_counts: training images per class, shape (K,).
        scheme: ``"inverse"`` or ``"effective_number"``.
        beta: in [0, 1), used by ``"effective_number"`` only.

    Returns:
        Weights of shape (K,), in the default float dtype, on the device of ``class_counts``.

    Raises:
        ValueError: unknown ``scheme``, ``beta`` outside [0, 1) or invalid counts.

    Example:
        >>> class_weights(torch.tensor([300, 100, 100]))
        tensor([0.4286, 1.2857, 1.2857])
    """
    return _class_weights(class_counts, scheme, beta).to(torch.get_default_dtype())


def _class_weights(class_counts: Tensor | Sequence[float], scheme: WeightScheme, beta: float = 0.9999) -> Tensor:
    """``class_weights`` in float64."""
    counts = check_class_counts(class_counts)  # float64, >= 1
    if scheme == "inverse":
        raw = counts.reciprocal()
    elif scheme == "effective_number":
        beta = check_param("beta", beta, ge=0.0, lt=1.0)
        # 1 - beta^n computed as -expm1(n log beta): exact for beta near 1, where 1 - beta^n loses digits.
        log_beta = torch.tensor(beta, dtype=torch.float64, device=counts.device).log()
        raw = (1.0 - beta) / -torch.expm1(counts * log_beta)
    else:
        raise ValueError(f"expected scheme in ('inverse', 'effective_number'), got {scheme!r}")
    return raw * (counts.numel() / raw.sum())
