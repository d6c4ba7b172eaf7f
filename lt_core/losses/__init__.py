"""Losses for long-tailed classification: a registry, one functional form and one module per loss.

Every module is called as ``loss(logits (N, K), target (N,) int64, *, features=(N, D) | None)``; only the losses
with ``LOSSES[name].needs_features`` read ``features``. The functional form of loss ``name`` is ``{name}_loss``.

Example:
    >>> import torch
    >>> from lt_core.losses import LOSSES, create_loss
    >>> sorted(LOSSES)[:3]
    ['balanced_softmax', 'cdt', 'ce']
    >>> loss = create_loss("logit_adjusted", class_counts=torch.tensor([100, 10, 1]), tau=1.0)
    >>> loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 2])).shape
    torch.Size([])
"""

from ._utils import Reduction, apply_reduction, check_class_counts, check_logits_target
from .balanced_softmax import BalancedSoftmaxLoss, balanced_softmax_loss
from .cdt import CDTLoss, cdt_loss
from .ce import CrossEntropyLoss, ce_loss
from .focal import FocalLoss, focal_loss
from .ib import IBLoss, ib_loss
from .ib_focal import IBFocalLoss, ib_focal_loss
from .label_smoothing import LabelSmoothingLoss, label_smoothing_loss
from .ldam import LDAMLoss, ldam_loss
from .logit_adjusted import LogitAdjustedLoss, logit_adjusted_loss
from .registry import LOSSES, LossInfo, create_loss, register
from .seql import SEQLLoss, drop_mask, seql_loss
from .weights import WeightScheme, class_weights

__all__ = [
    "LOSSES",
    "BalancedSoftmaxLoss",
    "CDTLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "IBFocalLoss",
    "IBLoss",
    "LDAMLoss",
    "LabelSmoothingLoss",
    "LogitAdjustedLoss",
    "LossInfo",
    "Reduction",
    "SEQLLoss",
    "WeightScheme",
    "apply_reduction",
    "balanced_softmax_loss",
    "cdt_loss",
    "ce_loss",
    "check_class_counts",
    "check_logits_target",
    "class_weights",
    "create_loss",
    "drop_mask",
    "focal_loss",
    "ib_focal_loss",
    "ib_loss",
    "label_smoothing_loss",
    "ldam_loss",
    "logit_adjusted_loss",
    "register",
    "seql_loss",
]
