"""Tests for lt_core.models: the (logits, features) contract, cosine classifier, ResNet-32 layout, registry errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lt_core.models as models
from lt_core.models import MODELS, CifarResNet, NormedLinear, create_model, register_model

CASES = [
    # (name, input_shape, params, feature dim)
    ("mlp", (64,), {}, 128),
    ("mlp", (1, 8, 8), {"hidden_sizes": [32, 16], "dropout": 0.2}, 16),
    ("mlp", (5,), {"hidden_sizes": []}, 5),
    ("resnet32", (3, 32, 32), {}, 64),
    ("resnet32", (1, 16, 16), {}, 64),
]


def test_registry_and_exports():
    assert set(MODELS) == {"mlp", "resnet32", "resnet18", "resnet34", "resnet50", "resnext50_32x4d", "timm"}
    assert MODELS["resnet50"].defaults == {"normalized": False, "weights_path": None}
    assert MODELS["mlp"].defaults == {"hidden_sizes": [128], "dropout": 0.0, "normalized": False}
    assert MODELS["resnet32"].defaults == {"normalized": False}
    assert sorted(models.__all__) == sorted(
        [
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
    )
    with pytest.raises(ValueError, match="already registered"):

        @register_model("mlp")
        def _again(num_classes, input_shape):  # pragma: no cover
            raise AssertionError


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize(("name", "shape", "params", "dim"), CASES)
def test_forward_shapes(name, shape, params, dim, normalized):
    torch.manual_seed(0)
    model = create_model(name, 7, shape, normalized=normalized, **params)
    logits, features = model(torch.randn(3, *shape))
    assert logits.shape == (3, 7) and features.shape == (3, dim)
    assert logits.dtype == features.dtype == torch.float32
    if normalized:
        assert isinstance(model.classifier, NormedLinear)
        assert logits.abs().max() <= 1 + 1e-6
        # Cosine logits: the classifier sees only directions.
        expected = F.normalize(features, dim=1) @ F.normalize(model.classifier.weight, dim=1).t()
        torch.testing.assert_close(logits, expected)
    else:
        assert isinstance(model.classifier, nn.Linear)
        torch.testing.assert_close(logits, model.classifier(features))


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize(("name", "shape", "params", "dim"), CASES[:1] + CASES[3:4])
def test_gradient_flows_to_every_parameter(name, shape, params, dim, normalized):
    torch.manual_seed(0)
    model = create_model(name, 5, shape, normalized=normalized, **params)
    logits, features = model(torch.randn(4, *shape))
    (F.cross_entropy(logits * 10, torch.tensor([0, 1, 2, 3])) + features.abs().sum() * 1e-3).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_resnet32_layout():
    model = create_model("resnet32", 10, (3, 32, 32))
    assert isinstance(model, CifarResNet)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 464_154  # the 0.46M of He et al. (2016), Table 6
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 31  # + the linear layer = 32 weighted layers
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [5, 5, 5]
    # Option-A shortcut: no parameters, subsample by 2 and zero-pad the channels.
    shortcut = model.layer2[0].shortcut
    x = torch.randn(2, 16, 32, 32)
    out = shortcut(x)
    assert out.shape == (2, 32, 16, 16) and not list(shortcut.parameters())
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    assert create_model("resnet32", 100, (3, 32, 32), normalized=True).classifier.weight.shape == (100, 64)


def test_resnet32_features_are_pooled_activations():
    torch.manual_seed(0)
    model = create_model("resnet32", 4, (3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    _, features = model(x)
    out = F.relu(model.bn1(model.conv1(x)))
    out = model.layer3(model.layer2(model.layer1(out)))
    torch.testing.assert_close(features, F.adaptive_avg_pool2d(out, 1).flatten(1))
    assert (features >= 0).all()


def test_mlp_dropout_only_in_training():
    torch.manual_seed(0)
    model = create_model("mlp", 3, (10,), dropout=0.5)
    x = torch.randn(6, 10)
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])
    model.train()
    assert not torch.equal(model(x)[1], model(x)[1])


def test_normed_linear():
    torch.manual_seed(0)
    layer = NormedLinear(8, 4)
    x = torch.randn(5, 8) * 100
    logits = layer(x)
    assert logits.shape == (5, 4) and logits.abs().max() <= 1 + 1e-6
    torch.testing.assert_close(layer(x * 3), logits)  # invariant to the feature scale
    own = layer(layer.weight.detach()[2:3] * 7)  # a class's own weight direction has cosine 1 with it
    torch.testing.assert_close(own[0, 2], torch.tensor(1.0))


def test_unknown_model_lists_known():
    known = r"\['mlp', 'resnet18', 'resnet32', 'resnet34', 'resnet50', 'resnext50_32x4d', 'timm'\]"
    with pytest.raises(KeyError, match=r"known models: " + known):
        create_model("vit", 10, (3, 32, 32))


@pytest.mark.parametrize(
    ("name", "shape", "params", "match"),
    [
        ("mlp", (4,), {"depth": 3}, r"unknown parameter\(s\) \['depth'\].*allowed"),
        ("mlp", (4,), {"hidden_sizes": [0]}, "hidden_sizes"),
        ("mlp", (4,), {"hidden_sizes": "128"}, "hidden_sizes"),
        ("mlp", (4,), {"hidden_sizes": [1.5]}, "hidden_sizes"),
        ("mlp", (4,), {"dropout": 1.0}, "dropout"),
        ("mlp", (4,), {"dropout": -0.1}, "dropout"),
        ("mlp", (4,), {"normalized": "yes"}, "normalized"),
        ("resnet32", (3, 32, 32), {"normalized": 1}, "normalized"),
        ("resnet32", (64,), {}, r"input_shape \(C, H, W\)"),
        ("resnet32", (3, 32, 32), {"hidden_sizes": [4]}, r"unknown parameter\(s\) \['hidden_sizes'\]"),
    ],
)
def test_bad_params(name, shape, params, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, 10, shape, **params)


@pytest.mark.parametrize(
    ("num_classes", "shape", "match"), [(0, (4,), "num_classes"), (3, (), "input_shape"), (3, (4, 0), "input_shape")]
)
def test_bad_sizes(num_classes, shape, match):
    with pytest.raises(ValueError, match=match):
        create_model("mlp", num_classes, shape)


def test_defaults_are_not_shared_between_models():
    a = create_model("mlp", 2, (3,))
    b = create_model("mlp", 2, (3,), hidden_sizes=[4])
    assert a.feature_dim == 128 and b.feature_dim == 4
    assert MODELS["mlp"].defaults["hidden_sizes"] == [128]
