"""Property tests (hypothesis) over every registered loss, and the long-tail corrections that uniform counts undo."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from losses_testutils import LOSS_NAMES, Batch, build, make_batch, run, tol

import lt_core.losses as L
from lt_core.losses import LOSSES

PROPERTY_SETTINGS = settings(deadline=None, max_examples=15, database=None)
# Losses whose value changes when a constant is added to all the logits of a sample (per-class temperatures).
NOT_SHIFT_INVARIANT = {"cdt"}


@st.composite
def batches(draw: st.DrawFn, name: str) -> Batch:
    """A random batch for loss ``name``: 1-8 samples, 2-6 classes, logits up to +-30, counts in [0, 1000]."""
    info = LOSSES[name]
    n, k = draw(st.integers(1, 8)), draw(st.integers(2, 6))
    counts = torch.tensor(draw(st.lists(st.integers(0, 1000), min_size=k, max_size=k)))
    seed, scale = draw(st.integers(0, 2**16)), draw(st.floats(0.01, 10.0))
    return make_batch(info, n, k, seed=seed, scale=scale, counts=counts)


@pytest.mark.parametrize("name", LOSS_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_non_negative_and_mean_is_none_mean(name: str, data: st.DataObject) -> None:
    batch = data.draw(batches(name))
    info = LOSSES[name]
    per_sample = run(build(info, batch, reduction="none"), batch)
    assert (per_sample >= 0).all()
    torch.testing.assert_close(run(build(info, batch, reduction="mean"), batch), per_sample.mean())


@pytest.mark.parametrize("name", LOSS_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_batch_permutation_invariant(name: str, data: st.DataObject) -> None:
    batch = data.draw(batches(name))
    info = LOSSES[name]
    perm = torch.randperm(len(batch.target), generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))))
    features = None if batch.features is None else batch.features[perm]
    permuted = Batch(batch.logits[perm], batch.target[perm], features, batch.counts)
    module = build(info, batch, reduction="none", deterministic=True)
    torch.testing.assert_close(run(module, permuted), run(module, batch)[perm], **tol(torch.float64))
    mean = build(info, batch, deterministic=True)
    torch.testing.assert_close(run(mean, permuted), run(mean, batch), **tol(torch.float64))


@pytest.mark.parametrize("name", sorted(set(LOSS_NAMES) - NOT_SHIFT_INVARIANT))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_shift_invariant(name: str, data: st.DataObject) -> None:
    batch = data.draw(batches(name))
    info = LOSSES[name]
    shift = torch.tensor(
        data.draw(st.lists(st.floats(-20, 20), min_size=len(batch.target), max_size=len(batch.target)))
    )
    module = build(info, batch, reduction="none", deterministic=True)
    shifted = run(module, batch, logits=batch.logits + shift.to(torch.float64)[:, None])
    torch.testing.assert_close(shifted, run(module, batch), rtol=1e-7, atol=1e-7)


def test_cdt_is_not_shift_invariant() -> None:
    logits, target = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([0])
    counts = torch.tensor([100, 1])
    assert not torch.isclose(
        L.cdt_loss(logits, target, class_counts=counts), L.cdt_loss(logits + 5, target, class_counts=counts)
    )


@st.composite
def uniform_case(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, k = draw(st.integers(1, 8)), draw(st.integers(2, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    logits = torch.randn(n, k, generator=gen, dtype=torch.float64) * draw(st.floats(0.01, 10.0))
    target = torch.randint(0, k, (n,), generator=gen)
    counts = torch.full((k,), draw(st.integers(0, 10_000)))
    return logits, target, counts


@PROPERTY_SETTINGS
@given(case=uniform_case(), tau=st.floats(0.1, 3.0), gamma=st.floats(0.0, 2.0))
def test_uniform_counts_remove_the_correction(case: tuple, tau: float, gamma: float) -> None:  # type: ignore[type-arg]
    logits, target, counts = case
    ce = F.cross_entropy(logits, target, reduction="none")
    for loss in (
        L.balanced_softmax_loss(logits, target, class_counts=counts, reduction="none"),
        L.logit_adjusted_loss(logits, target, class_counts=counts, tau=tau, reduction="none"),
        L.cdt_loss(logits, target, class_counts=counts, gamma=gamma, reduction="none"),
    ):
        torch.testing.assert_close(loss, ce, **tol(torch.float64))


@PROPERTY_SETTINGS
@given(case=uniform_case(), max_margin=st.floats(0.0, 1.0), scale=st.floats(0.5, 30.0))
def test_uniform_counts_make_ldam_a_constant_margin(case: tuple, max_margin: float, scale: float) -> None:  # type: ignore[type-arg]
    logits, target, counts = case
    loss = L.ldam_loss(logits, target, class_counts=counts, max_margin=max_margin, scale=scale, reduction="none")
    margin = max_margin * F.one_hot(target, logits.shape[1]).to(logits.dtype)
    expected = F.cross_entropy(scale * (logits - margin), target, reduction="none")
    torch.testing.assert_close(loss, expected, **tol(torch.float64))


@PROPERTY_SETTINGS
@given(case=uniform_case())
def test_uniform_counts_give_ib_unit_weights(case: tuple) -> None:  # type: ignore[type-arg]
    logits, target, counts = case
    features = torch.ones(len(target), 2, dtype=torch.float64)
    default = L.ib_loss(logits, target, features=features, class_counts=counts, reduction="none")
    unit = L.ib_loss(
        logits, target, features=features, class_counts=counts, class_weight=torch.ones(len(counts)), reduction="none"
    )
    torch.testing.assert_close(default, unit, **tol(torch.float64))
