"""Bad input gives a clear exception naming the problem, never a silent wrong number."""

from __future__ import annotations

import pytest
import torch
from losses_testutils import LOSS_NAMES, build, make_batch, run

import lt_core.losses as L
from lt_core.losses import LOSSES, create_loss

N, K = 8, 4
LOGITS = torch.randn(N, K)
TARGET = torch.arange(N) % K
COUNTS = torch.tensor([100, 30, 10, 1])


@pytest.mark.parametrize(
    ("logits", "target", "error", "message"),
    [
        (torch.randn(N), TARGET, ValueError, r"expected logits of shape \(N, K\), got \(8,\)"),
        (torch.randn(N, K, 1), TARGET, ValueError, r"expected logits of shape \(N, K\), got \(8, 4, 1\)"),
        (torch.ones(N, K, dtype=torch.int64), TARGET, TypeError, "expected logits of a floating dtype"),
        (torch.randn(N, 0), TARGET, ValueError, "at least one class"),
        (LOGITS, TARGET[:, None], ValueError, r"expected target of shape \(N,\)=\(8,\), got \(8, 1\)"),
        (LOGITS, TARGET[:5], ValueError, r"expected target of shape \(N,\)=\(8,\), got \(5,\)"),
        (LOGITS, TARGET.int(), TypeError, "expected target of dtype torch.int64, got torch.int32"),
        (LOGITS, TARGET.float(), TypeError, "expected target of dtype torch.int64, got torch.float32"),
        (LOGITS, torch.full((N,), K), ValueError, r"expected target values in \[0, K\)=\[0, 4\), got min 4 and max 4"),
        (LOGITS, TARGET - 1, ValueError, r"got min -1 and max 2"),
        (LOGITS.tolist(), TARGET, TypeError, "expected logits to be a Tensor, got list"),
        (LOGITS, TARGET.tolist(), TypeError, "expected target to be a Tensor, got list"),
    ],
)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bad_logits_or_target(name: str, logits, target, error: type[Exception], message: str) -> None:  # noqa: ANN001
    info = LOSSES[name]
    batch = make_batch(info, N, K, dtype=torch.float32, counts=COUNTS)
    module = build(info, batch)
    with pytest.raises(error, match=message):
        module(logits, target, features=batch.features)


def test_empty_batch_is_allowed() -> None:
    loss = L.ce_loss(torch.randn(0, 3), torch.zeros(0, dtype=torch.int64), reduction="sum")
    assert loss.item() == 0.0


def test_unknown_loss_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown loss 'focall'; known losses: balanced_softmax, cdt, ce, focal"):
        create_loss("focall")


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_unknown_parameter_names_it_and_the_allowed_ones(name: str) -> None:
    info = LOSSES[name]
    allowed = ", ".join(sorted(info.defaults)) or "none"
    with pytest.raises(TypeError, match=f"unknown parameter\\(s\\) 'gama' for loss '{name}'; allowed: {allowed}"):
        create_loss(name, class_counts=COUNTS, gama=2.0)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bad_reduction(name: str) -> None:
    with pytest.raises(ValueError, match=r"expected reduction in \('none', 'mean', 'sum'\), got 'avg'"):
        create_loss(name, class_counts=COUNTS, reduction="avg")
    info = LOSSES[name]
    batch = make_batch(info, N, K, counts=COUNTS)
    kwargs = {"class_counts": COUNTS} if info.needs_class_counts else {}
    if info.needs_features:
        kwargs["features"] = batch.features
    with pytest.raises(ValueError, match="expected reduction"):
        getattr(L, f"{name}_loss")(batch.logits, batch.target, reduction="batchmean", **kwargs)


def test_apply_reduction_refuses_unknown() -> None:
    with pytest.raises(ValueError, match="expected reduction"):
        L.apply_reduction(torch.ones(3), "elementwise_mean")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [n for n in LOSS_NAMES if LOSSES[n].needs_class_counts])
def test_missing_class_counts(name: str) -> None:
    with pytest.raises(ValueError, match=f"loss '{name}' needs class_counts"):
        create_loss(name)


@pytest.mark.parametrize(
    ("counts", "error", "message"),
    [
        (torch.tensor([10, -1, 3, 1]), ValueError, "expected class_counts finite and >= 0"),
        (torch.tensor([10.0, float("nan"), 3.0, 1.0]), ValueError, "expected class_counts finite and >= 0"),
        (torch.ones(2, 2), ValueError, r"expected class_counts of shape \(K,\), got \(2, 2\)"),
        (torch.ones(0), ValueError, "at least one class"),
        (torch.ones(4, dtype=torch.bool), TypeError, "expected class_counts of a real dtype, got torch.bool"),
        ("1234", TypeError, "expected class_counts to be a Tensor or a sequence of numbers, got str"),
    ],
)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bad_class_counts(name: str, counts, error: type[Exception], message: str) -> None:  # noqa: ANN001
    with pytest.raises(error, match=message):  # validated even by losses that ignore them
        create_loss(name, class_counts=counts)


@pytest.mark.parametrize("name", [n for n in LOSS_NAMES if LOSSES[n].needs_class_counts])
def test_class_counts_of_the_wrong_length_for_the_logits(name: str) -> None:
    info = LOSSES[name]
    batch = make_batch(info, N, K)
    module = create_loss(name, class_counts=torch.tensor([5, 4, 3, 2, 1, 1]))
    with pytest.raises(ValueError, match=r"expected class_(counts|weight) of shape \(K,\)=\(4,\), got \(6,\)"):
        run(module, batch)
    kwargs = {"features": batch.features} if info.needs_features else {}
    with pytest.raises(ValueError, match=r"expected class_counts of shape \(K,\)=\(4,\), got \(6,\)"):
        getattr(L, f"{name}_loss")(batch.logits, batch.target, class_counts=torch.ones(6), **kwargs)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bad_class_weight(name: str) -> None:
    info = LOSSES[name]
    with pytest.raises(ValueError, match="expected class_weight finite and >= 0"):
        create_loss(name, class_counts=COUNTS, class_weight=torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"expected class_weight of shape \(K,\), got \(1, 4\)"):
        create_loss(name, class_counts=COUNTS, class_weight=torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"expected class_weight of shape \(K,\)=\(4,\), got \(3,\)"):
        create_loss(name, class_counts=COUNTS, class_weight=torch.ones(3))  # K from the counts
    batch = make_batch(info, N, K, counts=COUNTS)
    module = create_loss(name, class_counts=COUNTS[:3], class_weight=torch.ones(3))
    with pytest.raises(ValueError, match=r"expected class_(weight|counts) of shape \(K,\)=\(4,\), got \(3,\)"):
        run(module, batch)  # K from the logits


@pytest.mark.parametrize("name", [n for n in LOSS_NAMES if LOSSES[n].needs_features])
def test_bad_features(name: str) -> None:
    info = LOSSES[name]
    batch = make_batch(info, N, K)
    module = build(info, batch)
    with pytest.raises(ValueError, match=f"loss '{name}' needs features"):
        module(batch.logits, batch.target)
    with pytest.raises(ValueError, match=r"expected features of shape \(N, D\)=\(8, D\), got \(7, 5\)"):
        module(batch.logits, batch.target, features=torch.randn(7, 5))
    with pytest.raises(ValueError, match=r"expected features of shape \(N, D\)=\(8, D\), got \(8,\)"):
        module(batch.logits, batch.target, features=torch.randn(8))
    with pytest.raises(TypeError, match="expected features of a floating dtype"):
        module(batch.logits, batch.target, features=torch.ones(8, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match=f"loss '{name}' needs features"):
        getattr(L, f"{name}_loss")(batch.logits, batch.target, features=None, class_counts=COUNTS)


BAD_PARAMS = [
    ("focal", "gamma", -0.5),
    ("label_smoothing", "epsilon", -0.1),
    ("label_smoothing", "epsilon", 1.0),
    ("seql", "lambda_", -0.01),
    ("seql", "lambda_", 1.5),
    ("seql", "gamma", -0.1),
    ("seql", "gamma", 1.1),
    ("ib", "alpha", 0.0),
    ("ib", "alpha", -5.0),
    ("ib", "epsilon", 0.0),
    ("ib_focal", "alpha", 0.0),
    ("ib_focal", "epsilon", -1e-3),
    ("ib_focal", "gamma", -1.0),
    ("cdt", "gamma", -0.2),
    ("ldam", "max_margin", -0.1),
    ("ldam", "scale", 0.0),
    ("logit_adjusted", "tau", 0.0),
    ("logit_adjusted", "tau", -1.0),
    ("focal", "gamma", float("nan")),
    ("focal", "gamma", float("inf")),
]


@pytest.mark.parametrize(("name", "param", "value"), BAD_PARAMS)
def test_out_of_range_parameter(name: str, param: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"expected {param} finite and .*, got {value}"):
        create_loss(name, class_counts=COUNTS, **{param: value})
    info = LOSSES[name]
    batch = make_batch(info, N, K, counts=COUNTS)
    kwargs = {"class_counts": COUNTS} if info.needs_class_counts else {}
    if info.needs_features:
        kwargs["features"] = batch.features
    with pytest.raises(ValueError, match=f"expected {param} finite"):
        getattr(L, f"{name}_loss")(batch.logits, batch.target, **{param: value}, **kwargs)


@pytest.mark.parametrize("value", ["2", True, None, [1.0]])
def test_parameter_of_the_wrong_type(value: object) -> None:
    with pytest.raises(TypeError, match="expected gamma to be a real number"):
        create_loss("focal", gamma=value)


def test_bad_generator() -> None:
    logits, target = torch.zeros(2, len(COUNTS)), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="expected generator to be a torch.Generator, got int"):
        L.seql_loss(logits, target, class_counts=COUNTS, generator=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown parameter\\(s\\) 'generator' for loss 'seql'"):
        create_loss("seql", class_counts=COUNTS, generator=torch.Generator())  # the module draws on its device


def test_edges_of_the_ranges_are_accepted() -> None:
    for name, params in [
        ("focal", {"gamma": 0.0}),
        ("label_smoothing", {"epsilon": 0.0}),
        ("seql", {"lambda_": 0.0, "gamma": 0.0}),
        ("seql", {"lambda_": 1.0, "gamma": 1.0}),
        ("cdt", {"gamma": 0.0}),
        ("ldam", {"max_margin": 0.0}),
    ]:
        create_loss(name, class_counts=COUNTS, **params)


def test_class_weights_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="expected scheme in"):
        L.class_weights(COUNTS, "sqrt")  # type: ignore[arg-type]
    for beta in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"expected beta finite and >= 0.0 and < 1.0"):
            L.class_weights(COUNTS, "effective_number", beta=beta)
    with pytest.raises(ValueError, match="expected class_counts finite and >= 0"):
        L.class_weights(torch.tensor([3, -3]))
