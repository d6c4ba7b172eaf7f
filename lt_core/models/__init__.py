"""Models returning ``(logits (N, K), features (N, D))``, built through a registry.

Shipped: ``mlp``, ``resnet32``, the ImageNet ``resnet18/34/50`` and ``resnext50_32x4d`` (torchvision parameter names,
``weights_path``), and ``timm:<arch>`` when timm is installed; each with an optional cosine classifier
(``normalized=True``, for LDAM).

Errors:
    ``KeyError``    unknown model name (lists the known ones).
    ``ValueError``  unknown or invalid parameter; names the culprit.
"""

from lt_core.models import imagenet_resnet, timm_models  # noqa: F401  (registers the models)
from lt_core.models.imagenet_resnet import ResNet, load_backbone_weights
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
    "ResNet",
    "create_model",
    "load_backbone_weights",
    "mlp",
    "register_model",
    "resnet32",
]
