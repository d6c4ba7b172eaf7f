"""Evaluation metrics for long-tailed classification, computed from summable statistics.

Everything is derived from a confusion matrix (rows = true class) plus, for calibration, a NLL sum and
per-confidence-bin counts. These statistics add up across workers, so a distributed evaluation all-reduces
:meth:`EvalAccumulator.tensors` and calls :meth:`EvalAccumulator.compute` once.

Shot groups are by *training* count ``n``: many ``n > many_threshold``, medium
``few_threshold <= n <= many_threshold``, few ``n < few_threshold`` (defaults 100 / 20, as Liu et al. 2019).

Errors:
    ``ValueError``  inconsistent shapes, labels outside ``[0, K)``, bad thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["EvalAccumulator", "metrics_from_confusion", "shot_groups"]

ArrayLike = Tensor | np.ndarray | Sequence[Any]


def _numpy(x: ArrayLike, dtype: type) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_thresholds(many_threshold: float, few_threshold: float) -> None:
    if few_threshold > many_threshold:
        raise ValueError(f"few_threshold ({few_threshold}) must be <= many_threshold ({many_threshold})")


def shot_groups(train_counts: ArrayLike, many_threshold: int = 100, few_threshold: int = 20) -> dict[str, list[int]]:
    """Split class indices into many / medium / few shot by training count.

    Args:
        train_counts: ``(K,)`` training samples per class.
        many_threshold: Classes with more samples than this are "many".
        few_threshold: Classes with fewer samples than this are "few"; the rest (inclusive bounds) are "medium".

    Example:
        >>> shot_groups([500, 100, 20, 19])
        {'many': [0], 'medium': [1, 2], 'few': [3]}
    """
    _check_thresholds(many_threshold, few_threshold)
    counts = _numpy(train_counts, np.int64).reshape(-1)
    return {
        "many": np.flatnonzero(counts > many_threshold).tolist(),
        "medium": np.flatnonzero((counts >= few_threshold) & (counts <= many_threshold)).tolist(),
        "few": np.flatnonzero(counts < few_threshold).tolist(),
    }


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def metrics_from_confusion(
    confusion: ArrayLike,
    train_counts: ArrayLike,
    *,
    calibration: dict[str, Any] | None = None,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class and shot-group accuracy, macro-F1, and optionally NLL / ECE.

    Args:
        confusion: ``(K, K)`` counts, ``confusion[i, j]`` = samples of true class ``i`` predicted as ``j``.
        train_counts: ``(K,)`` training samples per class (defines the shot groups).
        calibration: ``EvalAccumulator.calibration``: ``{"nll_sum", "count", "bin_count", "bin_confidence_sum",
            "bin_correct_sum"}``; adds ``nll``, ``ece`` and ``reliability``.
        many_threshold: See :func:`shot_groups`.
        few_threshold: See :func:`shot_groups`.

    Returns:
        Plain-Python (JSON-serialisable) dict:

        - ``accuracy``: trace / total (None without samples).
        - ``balanced_accuracy``: mean recall over classes present in the test set.
        - ``per_class_accuracy``: K recalls, None for a class without test samples.
        - ``many_shot_accuracy`` / ``medium_shot_accuracy`` / ``few_shot_accuracy``: mean per-class accuracy of the
          group's classes that have test samples; None for an empty group.
        - ``macro_f1``: mean F1 over classes that occur as a label or a prediction (sklearn's ``f1_score(...,
          average="macro")``); F1 is 0 when precision + recall is 0.
        - with ``calibration``: ``nll`` (mean), ``ece`` (``sum_b |acc_b - conf_b| n_b / N`` over equal-width bins
          ``(lo, hi]``) and ``reliability`` (``bin_edges``, per-bin ``confidence`` / ``accuracy`` (None when
          empty) and ``count``).

    Example:
        >>> m = metrics_from_confusion([[3, 1], [0, 2]], [200, 10])
        >>> m["accuracy"], m["balanced_accuracy"], m["many_shot_accuracy"], m["medium_shot_accuracy"]
        (0.8333333333333334, 0.875, 0.75, None)
    """
    cm = _numpy(confusion, np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"expected confusion of shape (K, K), got {cm.shape}")
    k = cm.shape[0]
    counts = _numpy(train_counts, np.int64).reshape(-1)
    if counts.shape != (k,):
        raise ValueError(f"expected train_counts of shape (K,)=({k},), got {counts.shape}")

    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)  # test samples per true class
    predicted = cm.sum(axis=0)
    total = int(support.sum())
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(k), where=present)
    per_class = [float(r) if p else None for r, p in zip(recall, present, strict=True)]

    groups = shot_groups(counts, many_threshold, few_threshold)
    shot = {}
    for g, members in groups.items():
        idx = np.asarray(members, dtype=np.int64)
        shot[f"{g}_shot_accuracy"] = _mean_or_none(recall[idx[present[idx]]])

    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    labelled = present | (predicted > 0)

    out: dict[str, Any] = {
        "accuracy": float(tp.sum() / total) if total else None,
        "balanced_accuracy": _mean_or_none(recall[present]),
        "per_class_accuracy": per_class,
        **shot,
        "macro_f1": _mean_or_none(f1[labelled]),
    }
    if calibration is not None:
        out.update(_calibration_metrics(calibration))
    return out


def _calibration_metrics(calibration: dict[str, Any]) -> dict[str, Any]:
    n = int(_numpy(calibration["count"], np.int64).sum())
    nll_sum = float(_numpy(calibration["nll_sum"], np.float64).sum())
    bin_count = _numpy(calibration["bin_count"], np.int64).reshape(-1)
    conf_sum = _numpy(calibration["bin_confidence_sum"], np.float64).reshape(-1)
    correct_sum = _numpy(calibration["bin_correct_sum"], np.float64).reshape(-1)
    n_bins = bin_count.shape[0]
    filled = bin_count > 0
    conf = np.divide(conf_sum, bin_count, out=np.zeros(n_bins), where=filled)
    acc = np.divide(correct_sum, bin_count, out=np.zeros(n_bins), where=filled)
    return {
        "nll": nll_sum / n if n else None,
        # sum_b |acc_b - conf_b| * n_b / N == sum_b |correct_b - confidence_sum_b| / N
        "ece": float(np.abs(correct_sum - conf_sum).sum() / n) if n else None,
        "reliability": {
            "bin_edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
            "confidence": [float(c) if f else None for c, f in zip(conf, filled, strict=True)],
            "accuracy": [float(a) if f else None for a, f in zip(acc, filled, strict=True)],
            "count": bin_count.tolist(),
        },
    }


class EvalAccumulator:
    """Accumulates summable evaluation statistics batch by batch.

    State (all tensors on ``device``): ``confusion`` (K, K) int64, ``nll_sum`` (1,) float64, ``count`` (1,)
    int64, ``bin_count`` (B,) int64, ``bin_confidence_sum`` (B,) float64, ``bin_correct_sum`` (B,) int64, with
    ``B = n_bins`` equal-width confidence bins ``(lo, hi]`` over [0, 1].

    Args:
        num_classes: ``K``.
        n_bins: Number of confidence bins for ECE / reliability.
        device: Where the state lives (put it on the GPU for NCCL all-reduce); inputs are moved there.

    Example:
        >>> acc = EvalAccumulator(3)
        >>> acc.update(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([0, 1]))
        >>> acc.compute([50, 50, 50])["accuracy"]
        0.5
    """

    def __init__(self, num_classes: int, n_bins: int = 15, *, device: torch.device | str | None = None) -> None:
        """Allocate zeroed state tensors on ``device``."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.num_classes, self.n_bins = num_classes, n_bins
        dev = torch.device("cpu") if device is None else torch.device(device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=dev)
        self.nll_sum = torch.zeros(1, dtype=torch.float64, device=dev)
        self.count = torch.zeros(1, dtype=torch.int64, device=dev)
        self.bin_count = torch.zeros(n_bins, dtype=torch.int64, device=dev)
        self.bin_confidence_sum = torch.zeros(n_bins, dtype=torch.float64, device=dev)
        self.bin_correct_sum = torch.zeros(n_bins, dtype=torch.int64, device=dev)
        # Inner bin edges; bucketize(right=False) puts x in bin i when edge[i] < x <= edge[i + 1].
        self._inner_edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=dev)[1:-1].contiguous()

    @property
    def device(self) -> torch.device:
        """Device of the state tensors."""
        return self.confusion.device

    @torch.no_grad()
    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            logits: ``(N, K)`` raw scores (cosine logits work too; softmax is taken as is).
            target: ``(N,)`` integer labels in ``[0, K)``.

        Raises:
            ValueError: on shape mismatch or a label outside ``[0, K)``.
        """
        k = self.num_classes
        if logits.ndim != 2 or logits.shape[1] != k:
            raise ValueError(f"expected logits of shape (N, K)=(N, {k}), got {tuple(logits.shape)}")
        if target.shape != (logits.shape[0],):
            raise ValueError(f"expected target of shape (N,)=({logits.shape[0]},), got {tuple(target.shape)}")
        if target.numel() == 0:
            return
        logits = logits.detach().to(self.device, torch.float32)
        target = target.detach().to(self.device, torch.int64)
        if bool((target < 0).any()) or bool((target >= k).any()):
            raise ValueError(f"target values must be in [0, {k}), got min {int(target.min())}, max {int(target.max())}")

        logp = logits.log_softmax(dim=1)  # (N, K)
        max_logp, pred = logp.max(dim=1)  # (N,), (N,)
        self.confusion += torch.bincount(target * k + pred, minlength=k * k).view(k, k)
        self.nll_sum -= logp.gather(1, target[:, None]).sum(dtype=torch.float64)
        self.count += target.numel()
        confidence = max_logp.double().exp()
        bins = torch.bucketize(confidence, self._inner_edges)  # (N,) in [0, n_bins)
        self.bin_count += torch.bincount(bins, minlength=self.n_bins)
        self.bin_confidence_sum += torch.bincount(bins, weights=confidence, minlength=self.n_bins)
        self.bin_correct_sum += torch.bincount(bins[pred == target], minlength=self.n_bins)

    def tensors(self) -> list[Tensor]:
        """The summable state, by reference: all-reduce (sum) each in place to merge workers."""
        return [self.confusion, self.nll_sum, self.count, self.bin_count, self.bin_confidence_sum, self.bin_correct_sum]

    def merge(self, other: EvalAccumulator) -> EvalAccumulator:
        """Add another accumulator's state into this one (same K and bins); returns ``self``."""
        if (other.num_classes, other.n_bins) != (self.num_classes, self.n_bins):
            raise ValueError("cannot merge accumulators with different num_classes or n_bins")
        for mine, theirs in zip(self.tensors(), other.tensors(), strict=True):
            mine += theirs.to(mine.device)
        return self

    def to(self, device: torch.device | str) -> EvalAccumulator:
        """Move the state to ``device`` (tensors() then returns the moved tensors); returns ``self``."""
        for name in ("confusion", "nll_sum", "count", "bin_count", "bin_confidence_sum", "bin_correct_sum"):
            setattr(self, name, getattr(self, name).to(device))
        self._inner_edges = self._inner_edges.to(device)
        return self

    @property
    def calibration(self) -> dict[str, Any]:
        """The calibration statistics as :func:`metrics_from_confusion` takes them (plain Python)."""
        return {
            "nll_sum": float(self.nll_sum.sum()),
            "count": int(self.count.sum()),
            "bin_count": self.bin_count.tolist(),
            "bin_confidence_sum": self.bin_confidence_sum.tolist(),
            "bin_correct_sum": self.bin_correct_sum.tolist(),
        }

    def compute(self, train_counts: ArrayLike, **thresholds: int) -> dict[str, Any]:
        """All metrics (see :func:`metrics_from_confusion`), including calibration.

        Args:
            train_counts: ``(K,)`` training samples per class.
            **thresholds: ``many_threshold`` / ``few_threshold``.
        """
        return metrics_from_confusion(self.confusion, train_counts, calibration=self.calibration, **thresholds)
