"""ImageNet ResNets (He et al., 2016) and ResNeXt (Xie et al., 2017), with torchvision's parameter names.

``resnet18``, ``resnet34``, ``resnet50`` and ``resnext50_32x4d`` (the backbones of ImageNet-LT and iNaturalist
papers) lay out their modules as ``torchvision.models.resnet`` does (``conv1``, ``bn1``, ``layer1..4`` of
``BasicBlock``/``Bottleneck`` with ``downsample.0/1``, ``fc``), so a torchvision or timm ImageNet state dict loads
as it is (``weights_path``); the ``fc`` head is always re-initialised for ``K`` classes. No torchvision import.

Errors (``ValueError``): a checkpoint key that is missing, unexpected or of the wrong shape, named.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lt_core.models.layers import check_bool, classifier
from lt_core.models.registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "load_backbone_weights"]


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); the stride is on the first."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, **_: int):
        """Build the block."""
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Residual block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: Tensor = self.relu(out + identity)
        return result


class Bottleneck(nn.Module):
    """1x1 - 3x3 (grouped for ResNeXt, carrying the stride: "ResNet v1.5") - 1x1 x4."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ):
        """Build the block; width = planes * base_width / 64 * groups, as torchvision."""
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Residual block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: Tensor = self.relu(out + identity)
        return result


class ResNet(nn.Module):
    """ImageNet ResNet / ResNeXt returning ``(logits (N, K), features (N, D))``.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: Blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: ``K``.
        in_channels: Input channels (3; torchvision weights need 3).
        groups: Groups of the 3x3 convs (32 for ResNeXt-50 32x4d).
        width_per_group: Channels per group at the first stage (4 for ResNeXt-50 32x4d).
        normalized: Cosine classifier (``NormedLinear``) instead of ``nn.Linear`` as ``fc``.

    Shape:
        - Input: ``(N, in_channels, H, W)``, ``H, W >= 32`` (five stride-2 steps).
        - Output: ``(logits, features)``; features are the globally pooled last stage, ``D = 512 * expansion``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int,
        *,
        in_channels: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        normalized: bool = False,
    ) -> None:
        """Build the stem, four stages and the head; torchvision's initialisation."""
        super().__init__()
        self.inplanes, self.groups, self.base_width = 64, groups, width_per_group
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = 512 * block.expansion
        self.fc = classifier(self.feature_dim, num_classes, normalized)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        groups, base_width = self.groups, self.base_width
        layers = [block(self.inplanes, planes, stride, downsample, groups=groups, base_width=base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=groups, base_width=base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(logits, features)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        features = torch.flatten(self.avgpool(x), 1)  # (N, C, h, w) -> (N, C)
        return self.fc(features), features


HEAD_PREFIX = "fc."


def read_state_dict(path: str) -> dict[str, Tensor]:
    """A state dict from ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors``.

    A ``.pth`` holding ``{"state_dict": ...}`` or ``{"model": ...}`` (common training checkpoints) is unwrapped, and
    a ``module.`` prefix (a DDP-wrapped model's) is dropped.

    Raises:
        ValueError: naming the file when it cannot be read or holds no state dict.
    """
    ext = os.path.splitext(path)[1].lower()
    state: object  # a .pth holds whatever was pickled: narrowed below
    try:
        if ext == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        elif ext in (".pth", ".pt", ".bin"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"weights_path: {path} must be a .pth or .safetensors file")
    except FileNotFoundError:
        raise ValueError(f"weights_path: no such file {path}") from None
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - pickle, zip and safetensors errors have no common base
        raise ValueError(f"weights_path: cannot read {path} ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights_path: {path} holds no state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_backbone_weights(model: nn.Module, path: str, *, head_prefix: str = HEAD_PREFIX) -> None:
    """Load every parameter and buffer but the head from ``path``; the head keeps its fresh initialisation.

    Head keys (``fc.*``) in the file are ignored, whatever their shape (an ImageNet head has 1000 classes).

    Raises:
        ValueError: naming every missing, unexpected or mis-shaped key.
    """
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(head_prefix)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(head_prefix)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    problems = []
    if missing:
        problems.append(
            f"missing keys {missing[:10]}" + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        )
    if unexpected:
        more = f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else ""
        problems.append(f"unexpected keys {unexpected[:10]}{more}")
    if shapes:
        problems.append(f"mis-shaped keys {shapes[:10]}")
    if problems:
        raise ValueError(f"weights_path: {path} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)


_ARCHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), {}),
    "resnet34": (BasicBlock, (3, 4, 6, 3), {}),
    "resnet50": (Bottleneck, (3, 4, 6, 3), {}),
    "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), {"groups": 32, "width_per_group": 4}),
}


def _builder(arch: str, description: str) -> Callable[..., nn.Module]:
    block, layers, extra = _ARCHS[arch]

    def build(
        num_classes: int, input_shape: Sequence[int], *, normalized: bool = False, weights_path: str | None = None
    ) -> ResNet:
        if len(input_shape) != 3 or min(input_shape[1:]) < 32:
            raise ValueError(f"{arch} needs input_shape (C, H, W) with H, W >= 32, got {tuple(input_shape)}")
        model = ResNet(
            block,
            layers,
            num_classes,
            in_channels=input_shape[0],
            normalized=check_bool("normalized", normalized),
            **extra,
        )
        if weights_path is not None:
            if not isinstance(weights_path, str):
                raise ValueError(f"weights_path must be a path string, got {weights_path!r}")
            load_backbone_weights(model, weights_path)
        return model

    build.__name__ = build.__qualname__ = arch
    build.__doc__ = f"Build {description}; ``weights_path`` loads a torchvision-named state dict (head excluded)."
    return register_model(arch, description=description)(build)


resnet18 = _builder("resnet18", "ResNet-18 (ImageNet layout, torchvision names), 11.7M parameters")
resnet34 = _builder("resnet34", "ResNet-34 (ImageNet layout, torchvision names), 21.8M parameters")
resnet50 = _builder("resnet50", "ResNet-50 (ImageNet layout, torchvision names), 25.6M parameters")
resnext50_32x4d = _builder("resnext50_32x4d", "ResNeXt-50 32x4d (ImageNet layout, torchvision names), 25.0M parameters")
