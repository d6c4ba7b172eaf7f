"""``timm:<arch>``: any ``timm`` architecture as a backbone, with this project's head (an optional extra).

``timm`` is imported only when such a model is built; without it the error names the extra to install.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import cast

from torch import Tensor, nn

from lt_core.models.imagenet_resnet import load_backbone_weights
from lt_core.models.layers import check_bool, classifier
from lt_core.models.registry import register_model

__all__ = ["TIMM_EXTRA", "TimmClassifier", "timm_available"]

TIMM_EXTRA = "timm"  # pip install 'longtail-service[timm]'
TIMM_PREFIX = "timm:"


def timm_available() -> bool:
    """Whether ``timm`` can be imported here."""
    return importlib.util.find_spec("timm") is not None


class TimmClassifier(nn.Module):
    """A timm backbone without its classifier (``num_classes=0``: pooled features) and a fresh head.

    Shape:
        - Output: ``(logits (N, K), features (N, backbone.num_features))``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, normalized: bool) -> None:
        """Attach the head."""
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(cast(int, backbone.num_features))  # a plain int attribute on every timm model
        self.fc = classifier(self.feature_dim, num_classes, normalized)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(logits, features)``."""
        features = self.backbone(x)
        return self.fc(features), features


@register_model("timm", description="any timm architecture, named 'timm:<arch>' (needs the optional extra 'timm')")
def timm_model(
    num_classes: int,
    input_shape: Sequence[int],
    *,
    arch: str = "",
    normalized: bool = False,
    weights_path: str | None = None,
) -> TimmClassifier:
    """Build ``timm.create_model(arch, num_classes=0)`` plus a head for ``num_classes``.

    Raises:
        ValueError: timm is not importable (naming the extra), or the architecture is unknown to timm.
    """
    if not timm_available():
        raise ValueError(
            f"model {TIMM_PREFIX}{arch} needs the optional extra {TIMM_EXTRA!r} "
            f"(pip install 'longtail-service[{TIMM_EXTRA}]'); timm is not importable here"
        )
    import timm

    if not arch or arch not in timm.list_models():
        raise ValueError(f"model {TIMM_PREFIX}{arch}: {arch!r} is not a timm architecture")
    backbone = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=input_shape[0])
    if weights_path is not None:
        head = backbone.default_cfg.get("classifier", "fc")
        load_backbone_weights(backbone, weights_path, head_prefix=f"{head}.")
    return TimmClassifier(backbone, num_classes, check_bool("normalized", normalized))
