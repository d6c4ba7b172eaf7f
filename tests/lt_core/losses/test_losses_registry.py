"""Registry-wide tests: parametrised over ``LOSSES``, so a newly registered loss is tested by registering it."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect

import pytest
import torch
from losses_testutils import (
    DETERMINISTIC_PARAMS,
    LOSS_NAMES,
    assert_finite,
    build,
    is_stochastic,
    long_tail_counts,
    make_batch,
    run,
    run_functional,
    tol,
)
from torch import Tensor

import lt_core.losses as L
from lt_core.losses import LOSSES

N, K = 6, 5


def test_registry_is_pinned() -> None:
    assert LOSS_NAMES == sorted(
        [
            "ce",
            "focal",
            "label_smoothing",
            "seql",
            "ib",
            "ib_focal",
            "cdt",
            "ldam",
            "balanced_softmax",
            "logit_adjusted",
        ]
    )
    needs_counts = {name for name, info in LOSSES.items() if info.needs_class_counts}
    assert needs_counts == {"seql", "ib", "ib_focal", "cdt", "ldam", "balanced_softmax", "logit_adjusted"}
    assert {name for name, info in LOSSES.items() if info.needs_features} == {"ib", "ib_focal"}
    assert {name: info.defaults for name, info in LOSSES.items()} == {
        "ce": {},
        "focal": {"gamma": 1.0},
        "label_smoothing": {"epsilon": 0.1},
        "seql": {"lambda_": 0.05, "gamma": 0.9},
        "ib": {"alpha": 1000.0, "epsilon": 1e-3},
        "ib_focal": {"alpha": 1000.0, "epsilon": 1e-3, "gamma": 1.0},
        "cdt": {"gamma": 0.2},
        "ldam": {"max_margin": 0.5, "scale": 30.0},
        "balanced_softmax": {},
        "logit_adjusted": {"tau": 1.0},
    }


def test_all_is_pinned() -> None:
    assert sorted(L.__all__) == sorted(
        [
            "LOSSES",
            "LossInfo",
            "Reduction",
            "WeightScheme",
            "apply_reduction",
            "check_class_counts",
            "check_logits_target",
            "class_weights",
            "create_loss",
            "drop_mask",
            "register",
            *(f"{name}_loss" for name in LOSS_NAMES),
            *(info.build.__name__ for info in LOSSES.values()),
        ]
    )
    for name in L.__all__:
        assert hasattr(L, name), name


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_info(name: str) -> None:
    info = LOSSES[name]
    assert info.name == name
    assert [f.name for f in dataclasses.fields(info)] == [
        "name",
        "build",
        "needs_class_counts",
        "needs_features",
        "defaults",
        "description",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "other"  # type: ignore[misc]
    assert info.description and "\n" not in info.description
    # defaults are the builder's keyword defaults, so specs can be checked against the signature
    params = inspect.signature(info.build).parameters
    for param, default in info.defaults.items():
        assert params[param].default == default
    # the functional form takes the same hyper-parameters with the same defaults
    fn_params = inspect.signature(getattr(L, f"{name}_loss")).parameters
    for param, default in info.defaults.items():
        assert fn_params[param].default == default, param
    assert ("class_counts" in fn_params) == info.needs_class_counts
    assert ("features" in fn_params) == info.needs_features


def test_register_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        L.register("ce", description="again")(L.CrossEntropyLoss)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize(("reduction", "shape"), [("none", (N,)), ("mean", ()), ("sum", ())])
def test_reduction_shapes(name: str, reduction: str, shape: tuple[int, ...]) -> None:
    info = LOSSES[name]
    batch = make_batch(info, N, K)
    assert run(build(info, batch, reduction=reduction), batch).shape == shape
    assert run_functional(info, batch, reduction=reduction).shape == shape


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_mean_and_sum_agree_with_none(name: str) -> None:
    info = LOSSES[name]
    batch = make_batch(info, N, K)
    per_sample = run(build(info, batch, reduction="none"), batch)
    torch.testing.assert_close(run(build(info, batch, reduction="mean"), batch), per_sample.mean())
    torch.testing.assert_close(run(build(info, batch, reduction="sum"), batch), per_sample.sum())


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("weighted", [False, True])
def test_module_matches_functional(name: str, weighted: bool) -> None:
    info = LOSSES[name]
    batch = make_batch(info, N, K, dtype=torch.float32, requires_grad=True)
    weight = torch.linspace(0.5, 2.0, K) if weighted else None
    module_loss = run(build(info, batch, class_weight=weight), batch)
    grads = torch.autograd.grad(module_loss, [t for t in (batch.logits, batch.features) if t is not None])
    fn_loss = run_functional(info, batch, class_weight=weight)
    fn_grads = torch.autograd.grad(fn_loss, [t for t in (batch.logits, batch.features) if t is not None])
    torch.testing.assert_close(module_loss, fn_loss, **tol(torch.float32))
    for grad, fn_grad in zip(grads, fn_grads, strict=True):
        torch.testing.assert_close(grad, fn_grad, **tol(torch.float32))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_class_weight_mean_divides_by_n(name: str) -> None:
    info = LOSSES[name]
    batch = make_batch(info, N, K)
    weight = torch.tensor([0.2, 1.0, 3.0, 0.5, 2.0], dtype=torch.float64)
    per_sample = run(build(info, batch, reduction="none", class_weight=weight), batch)
    mean = run(build(info, batch, reduction="mean", class_weight=weight), batch)
    torch.testing.assert_close(mean, per_sample.sum() / N)  # not / weight[target].sum(), as torch would
    if info.name not in ("ib", "ib_focal"):  # IB's given weights replace its default ones
        unweighted = run(build(info, batch, reduction="none"), batch)
        torch.testing.assert_close(per_sample, unweighted * weight[batch.target])


def test_class_weight_mean_differs_from_torch_weighted_mean() -> None:
    logits, target = torch.randn(8, 3, dtype=torch.float64), torch.tensor([0, 0, 0, 0, 0, 1, 2, 2])
    weight = torch.tensor([0.1, 2.0, 5.0], dtype=torch.float64)
    ours = L.ce_loss(logits, target, class_weight=weight)
    per_sample = torch.nn.functional.cross_entropy(logits, target, reduction="none") * weight[target]
    torch.testing.assert_close(ours, per_sample.sum() / 8)
    torch_mean = torch.nn.functional.cross_entropy(logits, target, weight=weight)
    torch.testing.assert_close(torch_mean, per_sample.sum() / weight[target].sum())
    assert not torch.isclose(ours, torch_mean)
    # "sum" is the same in both conventions
    torch.testing.assert_close(
        L.ce_loss(logits, target, class_weight=weight, reduction="sum"),
        torch.nn.functional.cross_entropy(logits, target, weight=weight, reduction="sum"),
    )


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradcheck(name: str) -> None:
    info = LOSSES[name]
    batch = make_batch(info, 4, K, requires_grad=True)
    module = build(info, batch, reduction="sum", class_weight=torch.linspace(0.5, 1.5, K))
    if info.needs_features:

        def fn(logits: Tensor, features: Tensor) -> Tensor:
            return run(module, dataclasses.replace(batch, features=features), logits=logits)

        assert torch.autograd.gradcheck(fn, (batch.logits, batch.features))
    else:
        # run() reseeds a stochastic loss's generator, so every evaluation draws the same mask
        assert torch.autograd.gradcheck(lambda logits: run(module, batch, logits=logits), (batch.logits,))


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_dtypes(name: str, dtype: torch.dtype) -> None:
    info = LOSSES[name]
    batch = make_batch(info, N, K, dtype=dtype, scale=1.0, requires_grad=True)
    reference = make_batch(info, N, K, dtype=torch.float32, scale=1.0)
    module = build(info, batch, reduction="none")
    loss = run(module, batch)
    assert loss.dtype == dtype
    loss.sum().backward()
    assert batch.logits.grad is not None and batch.logits.grad.dtype == dtype
    assert_finite(loss, batch.logits.grad)
    expected = run(module, reference)
    torch.testing.assert_close(loss.float(), expected, **tol(dtype if dtype == torch.bfloat16 else torch.float32))


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_finite_for_extreme_logits_and_imbalance(name: str, reduction: str) -> None:
    info = LOSSES[name]
    k = 8
    counts = long_tail_counts(k, imbalance=1000.0)  # 1000 ... 1
    batch = make_batch(info, 16, k, dtype=torch.float32, counts=counts, requires_grad=True)
    with torch.no_grad():
        batch.logits.copy_(torch.where(batch.logits > 0, 100.0, -100.0))
        batch.logits[0] = 100.0  # ties at +100
        batch.logits[1] = -100.0
    loss = run(build(info, batch, reduction=reduction), batch)
    loss.sum().backward()
    assert_finite(loss, batch.logits.grad, batch.features.grad if batch.features is not None else None)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_buffers_and_state_dict(name: str) -> None:
    info = LOSSES[name]
    batch = make_batch(info, N, K)
    if info.needs_class_counts:  # the statistics drawn from the counts are buffers (IB's are its class weights)
        assert build(info, batch).state_dict()
    module = build(info, batch, class_weight=torch.ones(K))
    state = module.state_dict()
    assert "class_weight" in state
    assert all(value.shape == (K,) for value in state.values())
    # every tensor lives in a buffer (so .to(device) moves it), none in a plain attribute
    assert not [key for key, value in vars(module).items() if isinstance(value, Tensor)]
    # a module built from other counts takes this one's statistics from the state dict
    other_batch = make_batch(info, N, K, counts=torch.arange(1, K + 1) * 7)
    other = build(info, other_batch, class_weight=torch.full((K,), 3.0))
    other.load_state_dict(state)
    torch.testing.assert_close(run(other, batch), run(module, batch))
    # floating buffers follow .to(dtype)
    for value in module.to(torch.float64).state_dict().values():
        assert value.dtype in (torch.float64, torch.bool)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_features_are_ignored_unless_needed(name: str) -> None:
    info = LOSSES[name]
    if info.needs_features:
        pytest.skip("reads features")
    batch = make_batch(info, N, K)
    module = build(info, batch)
    with_features = dataclasses.replace(batch, features=torch.randn(N, 3, dtype=torch.float64))
    torch.testing.assert_close(run(module, with_features), run(module, batch))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_repr_shows_parameters(name: str) -> None:
    info = LOSSES[name]
    text = repr(build(info, make_batch(info, N, K)))
    assert "reduction='mean'" in text
    for param in info.defaults:
        assert f"{param}=" in text


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_stochastic_losses_reproduce_with_a_seeded_generator(name: str) -> None:
    info = LOSSES[name]
    batch = make_batch(info, 64, K)
    module = build(info, batch, reduction="none")
    first, again = run(module, batch, seed=1), run(module, batch, seed=1)
    torch.testing.assert_close(first, again)
    if is_stochastic(info) and info.name not in DETERMINISTIC_PARAMS:
        pytest.fail(f"stochastic loss {name!r} needs an entry in DETERMINISTIC_PARAMS")
    if is_stochastic(info):
        assert not torch.equal(first, run(module, batch, seed=2))  # a fresh seed draws another mask


MODULES = [
    "lt_core.losses",
    "lt_core.losses.registry",
    "lt_core.losses.weights",
    *sorted({info.build.__module__ for info in LOSSES.values()}),
]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
