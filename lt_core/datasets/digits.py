"""``digits_lt``: scikit-learn's bundled 8x8 handwritten digits, made long-tailed (no download)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lt_core.datasets.base import (
    PROFILES,
    ArrayDataset,
    LTData,
    check_choice,
    check_float,
    check_int,
    long_tailed_counts,
    make_ltdata,
    register_dataset,
)

__all__ = ["load_digits_lt"]

NUM_CLASSES = 10


def _digits_csv() -> Path | None:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn (about 1.4 s of imports)."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    path = _digits_csv()
    if path is not None:  # the file load_digits reads: 64 pixel columns, then the label
        table = np.loadtxt(path, delimiter=",")
        data, target = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits

        data, target = load_digits(return_X_y=True)
    x = (data / 16.0).astype(np.float32)  # (1797, 64), pixel values 0..16 -> [0, 1]
    y = target.astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@register_dataset(
    "digits_lt",
    description="scikit-learn 8x8 digits (1797 images, 10 classes), long-tailed train, balanced test; no download",
)
def load_digits_lt(
    *, imbalance_factor: float = 50.0, profile: str = "exp", test_per_class: int = 50, seed: int = 0
) -> LTData:
    """Long-tailed digits: a balanced test set is held out first, then the rest is subsampled long-tailed.

    For each class (seeded), ``test_per_class`` images go to the test set; the remaining pool is subsampled with
    :func:`long_tailed_counts` using ``n_max`` = the smallest per-class pool, class 0 as head, 9 as tail.
    The test set depends only on ``seed`` and ``test_per_class``, so runs with different imbalance share it.
    Inputs are flat ``(64,)`` float32 in [0, 1].

    Raises:
        DatasetError: on an invalid parameter.
    """
    x, y = _digits()
    smallest = int(np.bincount(y, minlength=NUM_CLASSES).min())
    imbalance_factor = check_float("imbalance_factor", imbalance_factor, min_value=1.0)
    profile = check_choice("profile", profile, PROFILES)
    test_per_class = check_int("test_per_class", test_per_class, min_value=1, max_value=smallest - 1)
    seed = check_int("seed", seed, min_value=0)
    params = {"imbalance_factor": imbalance_factor, "profile": profile, "test_per_class": test_per_class, "seed": seed}
    rng = np.random.default_rng(seed)
    test_parts: list[np.ndarray] = []
    pools: list[np.ndarray] = []
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        test_parts.append(idx[:test_per_class])
        pools.append(idx[test_per_class:])
    n_max = min(len(p) for p in pools)
    counts = long_tailed_counts(n_max, NUM_CLASSES, imbalance_factor, profile)
    # Pools are already shuffled, so their first n_c entries are a seeded random subset.
    train_idx = np.concatenate([p[:n] for p, n in zip(pools, counts, strict=True)])
    test_idx = np.concatenate(test_parts)
    train = ArrayDataset(torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx]))
    test = ArrayDataset(torch.from_numpy(x[test_idx]), torch.from_numpy(y[test_idx]))
    return make_ltdata(
        name="digits_lt",
        train=train,
        test=test,
        train_targets=y[train_idx],
        num_classes=NUM_CLASSES,
        class_names=[str(c) for c in range(NUM_CLASSES)],
        input_shape=(64,),
        params=params,
        test_targets=y[test_idx],
    )
