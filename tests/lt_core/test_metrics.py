"""Tests for lt_core.metrics: hand-computed confusion metrics, shot groups, ECE/NLL vs numpy, summable accumulator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score

import lt_core.metrics as metrics
from lt_core.metrics import EvalAccumulator, metrics_from_confusion, shot_groups

# Rows = true class. Hand-computed below.
CM = [[5, 0, 0], [2, 3, 0], [0, 1, 1]]


def test_exports():
    assert sorted(metrics.__all__) == ["EvalAccumulator", "metrics_from_confusion", "shot_groups"]


def test_hand_computed_confusion_metrics():
    m = metrics_from_confusion(CM, [200, 50, 5])
    assert m["accuracy"] == pytest.approx(9 / 12)
    assert m["per_class_accuracy"] == pytest.approx([1.0, 0.6, 0.5])
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.6 + 0.5) / 3)
    assert m["many_shot_accuracy"] == pytest.approx(1.0)
    assert m["medium_shot_accuracy"] == pytest.approx(0.6)
    assert m["few_shot_accuracy"] == pytest.approx(0.5)
    # precision = [5/7, 3/4, 1/1], recall = [1, 3/5, 1/2]
    f1 = [2 * (5 / 7) / (5 / 7 + 1), 2 * 0.75 * 0.6 / 1.35, 2 * 0.5 / 1.5]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert set(m) == {
        "accuracy",
        "balanced_accuracy",
        "per_class_accuracy",
        "many_shot_accuracy",
        "medium_shot_accuracy",
        "few_shot_accuracy",
        "macro_f1",
    }


def test_matches_sklearn_on_random_predictions():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 6, 300), rng.integers(0, 6, 300)
    y_pred[y_pred == 5] = 0  # class 5 never predicted: precision 0/0 counts as 0
    m = metrics_from_confusion(confusion_matrix(y_true, y_pred, labels=range(6)), [1] * 6)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0.0))
    assert m["accuracy"] == pytest.approx(float(np.mean(y_true == y_pred)))


def test_empty_shot_groups_are_none_not_zero():
    m = metrics_from_confusion(CM, [500, 400, 300])
    assert m["many_shot_accuracy"] == pytest.approx(0.7)
    assert m["medium_shot_accuracy"] is None and m["few_shot_accuracy"] is None
    m = metrics_from_confusion(CM, [1, 2, 3])
    assert m["many_shot_accuracy"] is None and m["medium_shot_accuracy"] is None
    assert m["few_shot_accuracy"] == pytest.approx(0.7)


def test_class_without_test_samples():
    cm = [[2, 1, 0], [0, 0, 0], [1, 0, 3]]
    m = metrics_from_confusion(cm, [150, 50, 10])
    assert m["per_class_accuracy"][0] == pytest.approx(2 / 3)
    assert m["per_class_accuracy"][1] is None
    assert m["per_class_accuracy"][2] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert m["medium_shot_accuracy"] is None  # its only class has no test samples
    # Class 1 is predicted once, never right: it enters macro-F1 with F1 = 0 (as sklearn).
    f1_0 = 2 * (2 / 3) * (2 / 3) / (4 / 3)  # precision 2/3, recall 2/3
    f1_2 = 2 * 1.0 * 0.75 / 1.75  # precision 3/3, recall 3/4
    assert m["macro_f1"] == pytest.approx((f1_0 + 0 + f1_2) / 3)
    y_true, y_pred = [0, 0, 0, 2, 2, 2, 2], [0, 0, 1, 0, 2, 2, 2]
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0.0))
    # A class neither in the test set nor predicted is left out of macro-F1.
    m2 = metrics_from_confusion([[2, 0], [0, 0]], [10, 10])
    assert m2["macro_f1"] == pytest.approx(1.0) and m2["per_class_accuracy"] == [1.0, None]


def test_no_samples_at_all():
    m = metrics_from_confusion(np.zeros((2, 2), np.int64), [5, 5])
    assert m["accuracy"] is None and m["balanced_accuracy"] is None and m["macro_f1"] is None
    assert m["per_class_accuracy"] == [None, None]


def test_shot_group_boundaries():
    assert shot_groups([101, 100, 20, 19, 0]) == {"many": [0], "medium": [1, 2], "few": [3, 4]}
    assert shot_groups(torch.tensor([10, 5, 1]), many_threshold=5, few_threshold=2) == {
        "many": [0],
        "medium": [1],
        "few": [2],
    }
    m = metrics_from_confusion(np.eye(3, dtype=np.int64), [10, 5, 1], many_threshold=5, few_threshold=2)
    assert m["many_shot_accuracy"] == m["medium_shot_accuracy"] == m["few_shot_accuracy"] == 1.0
    with pytest.raises(ValueError, match="few_threshold"):
        shot_groups([1], many_threshold=10, few_threshold=20)


def test_input_validation():
    with pytest.raises(ValueError, match=r"confusion of shape \(K, K\)"):
        metrics_from_confusion(np.zeros((2, 3)), [1, 1])
    with pytest.raises(ValueError, match=r"train_counts of shape \(K,\)=\(2,\)"):
        metrics_from_confusion(np.zeros((2, 2)), [1, 1, 1])


def test_accepts_tensors_and_returns_plain_python():
    acc = EvalAccumulator(4)
    acc.update(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), torch.arange(50) % 4)
    m = acc.compute(torch.tensor([300, 60, 10, 1]))
    json.dumps(m, allow_nan=False)

    def check(v):
        if isinstance(v, dict):
            for x in v.values():
                check(x)
        elif isinstance(v, list):
            for x in v:
                check(x)
        else:
            assert v is None or type(v) in (float, int), type(v)

    check(m)
    assert len(m["reliability"]["bin_edges"]) == 16


def _reference_calibration(logits: np.ndarray, target: np.ndarray, n_bins: int = 15) -> tuple[float, float, list]:
    """NLL and ECE straight from the definitions, in float64 numpy (Guo et al. 2017 binning: (lo, hi])."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    nll = float(-np.mean(np.log(p[np.arange(len(target)), target])))
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    edges = np.linspace(0, 1, n_bins + 1)
    ece, counts = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        counts.append(int(in_bin.sum()))
        if in_bin.any():
            ece += abs(np.mean(pred[in_bin] == target[in_bin]) - np.mean(conf[in_bin])) * in_bin.mean()
    return nll, ece, counts


@pytest.mark.parametrize("n_bins", [15, 4])
def test_nll_and_ece_match_numpy(n_bins):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(600, 7, generator=g) * 3
    target = torch.randint(0, 7, (600,), generator=g)
    target[:300] = logits[:300].argmax(1)  # make half of them right so bins have mixed accuracy
    acc = EvalAccumulator(7, n_bins=n_bins)
    acc.update(logits, target)
    m = acc.compute([100] * 7)
    nll, ece, counts = _reference_calibration(logits.double().numpy(), target.numpy(), n_bins)
    assert m["nll"] == pytest.approx(nll, rel=1e-6)
    assert m["ece"] == pytest.approx(ece, abs=1e-6)
    assert m["reliability"]["count"] == counts
    assert sum(counts) == 600
    for c, conf, a in zip(counts, m["reliability"]["confidence"], m["reliability"]["accuracy"], strict=True):
        assert (c == 0) == (conf is None) == (a is None)
    assert m["accuracy"] == pytest.approx(float((logits.argmax(1) == target).double().mean()))


def test_hand_computed_ece():
    # Two right answers at confidence 0.9 (bin 13: (13/15, 14/15]) and a wrong one at 0.65 (bin 9: (9/15, 10/15]).
    # ECE = (2 * |1 - 0.9| + |0 - 0.65|) / 3.
    p = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.65, 0.35]])
    acc = EvalAccumulator(2)
    acc.update(p.log(), torch.tensor([0, 1, 1]))
    m = acc.compute([1, 1])
    assert m["ece"] == pytest.approx((0.1 + 0.1 + 0.65) / 3, abs=1e-6)
    assert m["nll"] == pytest.approx(-(2 * np.log(0.9) + np.log(0.35)) / 3, rel=1e-6)
    assert (
        m["reliability"]["count"][13] == 2 and m["reliability"]["count"][9] == 1 and sum(m["reliability"]["count"]) == 3
    )
    assert m["reliability"]["accuracy"][13] == 1.0 and m["reliability"]["accuracy"][9] == 0.0
    assert m["reliability"]["confidence"][9] == pytest.approx(0.65, abs=1e-6)
    assert m["reliability"]["confidence"][0] is None


def test_accumulator_confusion_matches_sklearn():
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(200, 5, generator=g), torch.randint(0, 5, (200,), generator=g)
    acc = EvalAccumulator(5)
    acc.update(logits, target)
    expected = confusion_matrix(target.numpy(), logits.argmax(1).numpy(), labels=range(5))
    np.testing.assert_array_equal(acc.confusion.numpy(), expected)
    assert acc.confusion.dtype == torch.int64 and acc.nll_sum.dtype == torch.float64


def test_accumulator_halves_sum_to_one_pass():
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(301, 6, generator=g) * 2, torch.randint(0, 6, (301,), generator=g)
    counts = [500, 120, 60, 30, 10, 2]
    whole = EvalAccumulator(6)
    whole.update(logits, target)
    first, second = EvalAccumulator(6), EvalAccumulator(6)
    for i in range(0, 150, 50):  # several batches on one worker
        first.update(logits[i : i + 50], target[i : i + 50])
    second.update(logits[150:], target[150:])
    # What dist.all_reduce(t, SUM) does on each state tensor, in place.
    state = first.tensors()
    assert state[0] is first.confusion
    for mine, theirs in zip(state, second.tensors(), strict=True):
        mine += theirs
    a, b = first.compute(counts), whole.compute(counts)
    assert a.keys() == b.keys()
    for key in a:
        if key in ("nll", "ece"):
            assert a[key] == pytest.approx(b[key], rel=1e-9)
        elif key != "reliability":
            assert a[key] == b[key], key
    assert a["reliability"]["count"] == b["reliability"]["count"]
    merged = EvalAccumulator(6).merge(second)
    assert torch.equal(merged.confusion, second.confusion)


def test_accumulator_validation_and_empty_batch():
    acc = EvalAccumulator(3)
    acc.update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))
    assert acc.compute([1, 1, 1])["nll"] is None
    with pytest.raises(ValueError, match=r"target values must be in \[0, 3\)"):
        acc.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"logits of shape \(N, K\)=\(N, 3\)"):
        acc.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"target of shape \(N,\)=\(2,\)"):
        acc.update(torch.zeros(2, 3), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="different num_classes"):
        acc.merge(EvalAccumulator(4))
    assert int(acc.count) == 0


def test_accumulator_ignores_autograd_and_dtype():
    logits = torch.randn(8, 3, requires_grad=True)
    acc = EvalAccumulator(3)
    acc.update(logits.to(torch.bfloat16), torch.arange(8) % 3)
    acc.update(logits * 2, torch.arange(8) % 3)
    assert int(acc.confusion.sum()) == 16 and not acc.nll_sum.requires_grad
