"""Losses off the CPU, checked on the CPU: state moves with ``.to()``, and ``forward`` never syncs with the host.

A host sync (``.item()``, ``.tolist()``, ``nonzero()``, ``int(tensor)``) needs the tensor's data. ``meta`` tensors and
``FakeTensorMode`` tensors have none, so any sync in ``forward`` raises there: these tests catch on the CPU what
would stall every CUDA step.
"""

from __future__ import annotations

import pytest
import torch
from losses_testutils import LOSS_NAMES, long_tail_counts
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode

import lt_core.losses as L
from lt_core.losses import LOSSES, create_loss

K, N, D = 6, 16, 4
# Fake tensors on "meta": not the CPU, so the losses take their accelerator paths. (Fake "cuda" tensors need a
# CUDA build of torch for indexing and autograd.)
DEV = "meta"
COUNTS = long_tail_counts(K)
WEIGHT = torch.linspace(0.5, 1.5, K)
# SEQL draws its mask three ways: dense bits (0.5), sparse with drops rare (0.1) or keeps rare (0.9); 1.0 drops all
SEQL_GAMMAS = [0.1, 0.5, 0.9, 1.0]


def _cases() -> list[tuple[str, dict[str, float]]]:
    cases: list[tuple[str, dict[str, float]]] = []
    for name in LOSS_NAMES:
        if name == "seql":
            cases += [(name, {"gamma": g, "lambda_": 0.3}) for g in SEQL_GAMMAS]
        else:
            cases.append((name, {}))
    return cases


CASES = _cases()
IDS = [f"{name}-{params.get('gamma', '')}" if params else name for name, params in CASES]


def _module(name: str, params: dict[str, float], *, weighted: bool = True) -> nn.Module:
    return create_loss(name, class_counts=COUNTS, class_weight=WEIGHT if weighted else None, **params)


def _plain_attribute_values(module: nn.Module) -> list[tuple[str, object]]:
    """(qualified name, value) of every attribute that is not a parameter, buffer or submodule, recursively."""
    found: list[tuple[str, object]] = []
    for prefix, sub in module.named_modules():
        for key, value in vars(sub).items():
            if key in ("_parameters", "_buffers", "_modules") or key.startswith("_") and key.endswith("_hooks"):
                continue
            values = list(value.values()) if isinstance(value, dict) else value
            for item in values if isinstance(values, (list, tuple)) else [values]:
                found.append((f"{prefix}.{key}" if prefix else key, item))
    return found


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_to_meta_moves_all_state_and_no_tensor_or_generator_hides_in_plain_attributes(
    name: str, params: dict[str, float], weighted: bool
) -> None:
    module = _module(name, params, weighted=weighted).to("meta")
    state = list(module.named_parameters()) + list(module.named_buffers())
    assert all(t.device.type == "meta" for _, t in state), [(k, t.device) for k, t in state]
    values = _plain_attribute_values(module)
    stray = [(k, type(v).__name__) for k, v in values if isinstance(v, (Tensor, torch.Generator))]
    assert stray == []
    # and the moved module runs on meta inputs: any host sync would need data that meta tensors do not have
    logits = torch.empty(N, K, device="meta", requires_grad=True)
    target = torch.empty(N, dtype=torch.int64, device="meta")
    features = torch.empty(N, D, device="meta", requires_grad=True) if LOSSES[name].needs_features else None
    out = module(logits, target, features=features)
    out.backward()
    assert out.device.type == "meta" and out.shape == ()
    assert logits.grad is not None and logits.grad.device.type == "meta" and logits.grad.shape == (N, K)


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_forward_makes_no_host_sync_under_fake_tensor_mode(name: str, params: dict[str, float]) -> None:
    # FakeTensorMode raises DataDependentOutputException (or DynamicOutputShapeException) wherever the host would
    # read device data: .item(), .tolist(), int(t), nonzero().
    module = _module(name, params)
    with FakeTensorMode():
        # .to(DEV) with fake buffers (fake tensors carry no values, only shape, dtype and device)
        module = module._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=DEV))
        logits = torch.randn(N, K, device=DEV)
        target = torch.randint(0, K, (N,), device=DEV)
        features = torch.randn(N, D, device=DEV) if LOSSES[name].needs_features else None
        loss = module(logits, target, features=features)
        assert loss.device.type == DEV and loss.shape == ()


FUNCTIONAL_CASES = [name for name in LOSS_NAMES if not LOSSES[name].needs_features] + ["ib", "ib_focal"]


@pytest.mark.parametrize("name", sorted(set(FUNCTIONAL_CASES)))
def test_functional_forms_take_a_class_weight_on_another_device(name: str) -> None:
    # logits and target on meta, class_weight and class_counts on the CPU: the weight is indexed on the target's device
    info = LOSSES[name]
    kwargs: dict[str, object] = {"class_weight": WEIGHT}
    if info.needs_class_counts:
        kwargs["class_counts"] = COUNTS
    if info.needs_features:
        kwargs["features"] = torch.empty(N, D, device="meta")
    logits = torch.empty(N, K, device="meta")
    target = torch.empty(N, dtype=torch.int64, device="meta")
    out = getattr(L, f"{name}_loss")(logits, target, reduction="none", **kwargs)
    assert out.device.type == "meta" and out.shape == (N,)


def test_target_check_keeps_its_message_on_the_cpu() -> None:
    with pytest.raises(ValueError, match=r"expected target values in \[0, K\)=\[0, 6\), got min 0 and max 6"):
        L.ce_loss(torch.zeros(2, K), torch.tensor([0, K]))
