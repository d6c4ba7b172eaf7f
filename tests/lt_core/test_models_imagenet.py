"""The ImageNet ResNets: torchvision's layout and names, weights_path loading, cosine heads, timm's extra."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lt_core.models import MODELS, NormedLinear, create_model

# Parameter counts of torchvision's models with their 1000-class heads (torchvision's model documentation).
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnext50_32x4d": 25_028_904,
}


@pytest.mark.parametrize("arch", sorted(TORCHVISION_PARAMS))
def test_layout_matches_torchvision(arch: str):
    model = create_model(arch, 1000, (3, 32, 32))
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[arch]
    keys = set(model.state_dict())
    assert {
        "conv1.weight",
        "bn1.running_mean",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.weight",
        "layer4.1.conv2.weight",
        "fc.weight",
        "fc.bias",
    } <= keys
    if arch in ("resnet50", "resnext50_32x4d"):
        assert "layer1.0.conv3.weight" in keys and "layer1.0.downsample.0.weight" in keys
    if arch == "resnext50_32x4d":
        assert model.state_dict()["layer1.0.conv2.weight"].shape == (128, 4, 3, 3)  # 32 groups of 4


def test_features_are_the_pooled_penultimate_layer_and_cosine_heads_work():
    model = create_model("resnet18", 4, (3, 32, 32), normalized=True).eval()
    x = torch.randn(3, 3, 32, 32)
    logits, features = model(x)
    assert logits.shape == (3, 4) and features.shape == (3, 512)
    assert isinstance(model.fc, NormedLinear) and logits.abs().max() <= 1 + 1e-6
    with torch.no_grad():
        h = model.layer4(model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x))))))))
    assert torch.allclose(features, h.mean(dim=(2, 3)), atol=1e-6)
    with pytest.raises(ValueError, match=r"resnet18 needs input_shape \(C, H, W\) with H, W >= 32"):
        create_model("resnet18", 4, (3, 16, 16))


def imagenet_state(arch: str = "resnet18") -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return create_model(arch, 1000, (3, 32, 32)).state_dict()  # torchvision's names (see the layout test)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_weights_path_loads_the_backbone_and_reinitialises_the_head(tmp_path: Path, fmt: str):
    state = imagenet_state()
    path = tmp_path / f"resnet18.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = create_model("resnet18", 5, (3, 32, 32), weights_path=str(path))
    loaded = model.state_dict()
    for key in ("conv1.weight", "layer3.1.bn2.running_var", "layer4.0.downsample.0.weight"):
        assert torch.equal(loaded[key], state[key]), key
    assert loaded["fc.weight"].shape == (5, 512)
    fresh = create_model("resnet18", 5, (3, 32, 32))
    assert not torch.equal(loaded["conv1.weight"], fresh.state_dict()["conv1.weight"])


def test_training_checkpoint_wrappers_are_unwrapped(tmp_path: Path):
    state = {f"module.{k}": v for k, v in imagenet_state().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    model = create_model("resnet18", 2, (3, 32, 32), weights_path=str(tmp_path / "ckpt.pth"))
    assert torch.equal(model.state_dict()["conv1.weight"], state["module.conv1.weight"])


def test_wrong_or_misshaped_keys_are_refused_by_name(tmp_path: Path):
    state = imagenet_state()
    state["layer1.0.conv1.kernel"] = state.pop("layer1.0.conv1.weight")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(
        ValueError,
        match=r"renamed.pth does not fit the model: missing keys \['layer1.0.conv1.weight'\]; "
        r"unexpected keys \['layer1.0.conv1.kernel'\]",
    ):
        create_model("resnet18", 3, (3, 32, 32), weights_path=str(tmp_path / "renamed.pth"))
    torch.save(imagenet_state("resnet50"), tmp_path / "r50.pth")
    with pytest.raises(
        ValueError,
        match=r"r50.pth does not fit the model: unexpected keys \['layer1.0.bn3.bias'.*"
        r"mis-shaped keys \['layer1.0.conv1.weight \(file \(64, 64, 1, 1\), model \(64, 64, 3, 3\)\)'",
    ):
        create_model("resnet18", 3, (3, 32, 32), weights_path=str(tmp_path / "r50.pth"))
    state = imagenet_state()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(
        ValueError, match=r"mis-shaped keys \['conv1.weight \(file \(64, 3, 3, 3\), model \(64, 3, 7, 7\)\)'\]"
    ):
        create_model("resnet18", 3, (3, 32, 32), weights_path=str(tmp_path / "shape.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"weights_path: cannot read .*junk.pth"):
        create_model("resnet18", 3, (3, 32, 32), weights_path=str(tmp_path / "junk.pth"))
    with pytest.raises(ValueError, match=r"must be a .pth or .safetensors file"):
        create_model("resnet18", 3, (3, 32, 32), weights_path=str(tmp_path / "w.npz"))


def test_timm_models_name_the_extra_when_timm_is_missing():
    pytest.importorskip("torch")
    from lt_core.models.timm_models import timm_available

    assert "timm" in MODELS
    if timm_available():
        pytest.skip("timm is installed here")
    with pytest.raises(ValueError, match=r"model timm:convnext_tiny needs the optional extra 'timm'"):
        create_model("timm:convnext_tiny", 3, (3, 32, 32))
