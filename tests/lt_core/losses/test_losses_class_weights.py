"""``class_weights`` for both schemes, and the SEQL Bernoulli draw."""

from __future__ import annotations

import math

import pytest
import torch

import lt_core.losses as L


def test_inverse_weights() -> None:
    weights = L.class_weights(torch.tensor([300, 100, 100]))
    torch.testing.assert_close(weights, torch.tensor([3 / 7, 9 / 7, 9 / 7]))
    assert weights.dtype == torch.get_default_dtype()


def test_inverse_weights_clamp_empty_classes_to_one() -> None:
    torch.testing.assert_close(L.class_weights([0, 1, 4]), torch.tensor([4 / 3, 4 / 3, 1 / 3]))


def test_effective_number_weights() -> None:
    counts, beta = [1000, 100, 10, 1], 0.999
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    expected = torch.tensor([r * len(counts) / sum(raw) for r in raw])
    torch.testing.assert_close(L.class_weights(torch.tensor(counts), "effective_number", beta=beta), expected)


@pytest.mark.parametrize("scheme", ["inverse", "effective_number"])
def test_weights_sum_to_k_and_favour_rare_classes(scheme: str) -> None:
    weights = L.class_weights(torch.tensor([5000, 700, 80, 3, 1]), scheme)  # type: ignore[arg-type]
    assert math.isclose(weights.sum().item(), 5.0, rel_tol=1e-6)
    assert (weights.diff() > 0).all()


def test_effective_number_limits() -> None:
    counts = torch.tensor([1000, 10, 1])
    torch.testing.assert_close(L.class_weights(counts, "effective_number", beta=0.0), torch.ones(3))
    near_one = L.class_weights(counts, "effective_number", beta=1 - 1e-12)
    torch.testing.assert_close(near_one, L.class_weights(counts, "inverse"), rtol=1e-4, atol=1e-6)


# --- the SEQL draw ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.05, 0.3, 0.5, 0.9])  # sparse (gaps) and dense (bits) draws
def test_drop_mask_is_bernoulli_gamma_on_tail_columns_only(gamma: float) -> None:
    n, k = 4000, 6
    tail = torch.tensor([False, True, True, False, True, True])
    target = torch.arange(n) % k
    mask = L.drop_mask(tail, target, gamma, torch.Generator().manual_seed(0))
    assert mask.shape == (n, k) and mask.dtype == torch.bool
    assert not mask[:, ~tail].any()  # head classes are never dropped
    assert not mask.gather(1, target[:, None]).any()  # nor a sample's own class
    off_target = torch.ones(n, k, dtype=torch.bool).scatter_(1, target[:, None], False) & tail
    rate = mask[off_target].double().mean().item()
    assert abs(rate - gamma) < 0.015  # about 13000 draws: 5 standard deviations
    # independent across columns: the joint rate of two tail columns is gamma^2
    both = (mask[:, 1] & mask[:, 2])[(target != 1) & (target != 2)].double().mean().item()
    assert abs(both - gamma**2) < 0.02


def test_drop_mask_edges() -> None:
    tail, target = torch.tensor([True, True, False]), torch.tensor([0, 1, 2])
    assert not L.drop_mask(tail, target, 0.0).any()
    expected = torch.tensor([[False, True, False], [True, False, False], [True, True, False]])
    assert torch.equal(L.drop_mask(tail, target, 1.0), expected)


@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.9])
def test_drop_mask_reproducible_with_a_generator(gamma: float) -> None:
    tail, target = torch.ones(50, dtype=torch.bool), torch.zeros(33, dtype=torch.int64)
    first = L.drop_mask(tail, target, gamma, torch.Generator().manual_seed(7))
    assert torch.equal(first, L.drop_mask(tail, target, gamma, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, L.drop_mask(tail, target, gamma, torch.Generator().manual_seed(8)))


def test_drop_mask_sparse_draw_covers_the_whole_grid() -> None:
    # many small draws: the last rows are reached as often as the first ones (the chunked gaps do not stop early)
    tail, target = torch.ones(3, dtype=torch.bool), torch.zeros(3000, dtype=torch.int64)
    kept = ~L.drop_mask(tail, target, 0.95, torch.Generator().manual_seed(0))[:, 1:]
    first, last = kept[:1500].double().mean().item(), kept[1500:].double().mean().item()
    assert abs(first - 0.05) < 0.015 and abs(last - 0.05) < 0.015


def test_seql_module_draws_afresh_each_call() -> None:
    module = L.SEQLLoss(class_counts=torch.tensor([1000, 5, 5, 5]), lambda_=0.1, gamma=0.5, reduction="none")
    logits, target = torch.randn(64, 4), torch.zeros(64, dtype=torch.int64)
    assert not torch.equal(module(logits, target), module(logits, target))
