"""``resnet32``: the CIFAR ResNet-32 of He et al. (2016), as in the LDAM-DRW code (Cao et al., 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lt_core.models.layers import check_bool, classifier
from lt_core.models.registry import register_model

__all__ = ["BasicBlock", "CifarResNet", "resnet32"]


class _ShortcutA(nn.Module):
    """Option-A shortcut: subsample by 2 spatially and zero-pad the new channels (no parameters)."""

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        self.pad = planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        # (N, C, H, W) -> (N, C + pad, H/2, W/2); the padding is split evenly between both ends, as in the paper code.
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        """Two 3x3 convs; an option-A shortcut when the shape changes."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _ShortcutA(in_planes, planes)

    def forward(self, x: Tensor) -> Tensor:
        """Residual block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2): conv3x3(16), three stages of ``n`` basic blocks (16/32/64 channels), global pool.

    Args:
        num_classes: ``K``.
        in_channels: Input channels (3 for CIFAR).
        num_blocks: Blocks per stage (5 gives ResNet-32).
        normalized: Cosine classifier (:class:`NormedLinear`) instead of ``nn.Linear``.

    Shape:
        - Input: ``(N, in_channels, H, W)``.
        - Output: ``(logits (N, K), features (N, 64))``, features being the globally pooled activations.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, num_blocks: int = 5, normalized: bool = False) -> None:
        """Build the stem, the three stages and the classifier; kaiming-normal init."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(num_blocks):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.feature_dim = 64
        self.classifier = classifier(64, num_classes, normalized)
        for m in self.modules():  # as the LDAM code: kaiming-normal convs and linear layers (not NormedLinear)
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(logits, features)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        features = out.mean(dim=(2, 3))  # global average pool: (N, 64, h, w) -> (N, 64)
        return self.classifier(features), features


@register_model("resnet32", description="CIFAR ResNet-32 (He et al. 2016, option-A shortcuts), 0.46M parameters")
def resnet32(num_classes: int, input_shape: Sequence[int], *, normalized: bool = False) -> CifarResNet:
    """Build ResNet-32 for images of ``input_shape = (C, H, W)``.

    Raises:
        ValueError: if ``input_shape`` is not ``(C, H, W)`` or ``normalized`` is not a bool.
    """
    if len(input_shape) != 3:
        raise ValueError(f"resnet32 needs input_shape (C, H, W), got {tuple(input_shape)}")
    return CifarResNet(num_classes, in_channels=input_shape[0], normalized=check_bool("normalized", normalized))
