"""Models returning ``(logits (N, K), features (N, D))``, built through a registry.

Shipped: ``mlp`` and ``resnet32``, each with an optional cosine classifier (``normalized=True``, for LDAM).

Errors:
    ``KeyError``    unknown model name (lists the known ones).
    ``ValueError``  unknown or invalid parameter; names the culprit.
"""

from lt_core.models.layers import NormedLinear
from lt_core.models.mlp import MLP, mlp
from lt_core.models.registry import MODELS, ModelInfo, create_model, register_model
from lt_core.models.resnet import CifarResNet, resnet32

__all__ = [
    "MLP",
    "MODELS",
    "CifarResNet",
    "ModelInfo",
    "NormedLinear",
    "create_model",
    "mlp",
    "register_model",
    "resnet32",
]
