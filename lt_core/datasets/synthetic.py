"""``synthetic_lt``: a seeded Gaussian mixture with a long-tailed training set (fast, any size up to 1000 classes)."""

from __future__ import annotations

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

__all__ = ["load_synthetic_lt"]

MAX_CLASSES = 1000


@register_dataset(
    "synthetic_lt",
    description="seeded Gaussian mixture (up to 1000 classes), long-tailed train, balanced test",
)
def load_synthetic_lt(
    *,
    num_classes: int = 10,
    dim: int = 32,
    n_max: int = 500,
    imbalance_factor: float = 100.0,
    profile: str = "exp",
    test_per_class: int = 50,
    class_sep: float = 2.0,
    noise: float = 1.0,
    seed: int = 0,
) -> LTData:
    """Gaussian mixture: class means are random points on the sphere of radius ``class_sep`` in ``R^dim``.

    Each sample is ``mean[y] + noise * N(0, I)``. Training counts follow :func:`long_tailed_counts` (class 0 is
    the head); the test set has ``test_per_class`` samples of every class. Means, training noise and test noise
    use independent seeded streams, so the means and the test set do not depend on the imbalance parameters.

    Raises:
        DatasetError: on an invalid parameter.
    """
    num_classes = check_int("num_classes", num_classes, min_value=2, max_value=MAX_CLASSES)
    dim = check_int("dim", dim, min_value=1, max_value=65536)
    n_max = check_int("n_max", n_max, min_value=1, max_value=100_000)
    imbalance_factor = check_float("imbalance_factor", imbalance_factor, min_value=1.0)
    profile = check_choice("profile", profile, PROFILES)
    test_per_class = check_int("test_per_class", test_per_class, min_value=1, max_value=100_000)
    class_sep = check_float("class_sep", class_sep, min_value=0.0)
    noise = check_float("noise", noise, positive=True)
    seed = check_int("seed", seed, min_value=0)
    params = {
        "num_classes": num_classes,
        "dim": dim,
        "n_max": n_max,
        "imbalance_factor": imbalance_factor,
        "profile": profile,
        "test_per_class": test_per_class,
        "class_sep": class_sep,
        "noise": noise,
        "seed": seed,
    }
    k, d = num_classes, dim
    means_rng, train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    means = means_rng.standard_normal((k, d))
    means *= class_sep / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)

    def sample(rng: np.random.Generator, labels: np.ndarray) -> torch.Tensor:
        x = rng.standard_normal((labels.shape[0], d), dtype=np.float32)
        x *= noise
        x += means[labels].astype(np.float32)
        return torch.from_numpy(x)

    counts = long_tailed_counts(n_max, k, imbalance_factor, profile)
    y_train = np.repeat(np.arange(k, dtype=np.int64), counts)
    y_test = np.repeat(np.arange(k, dtype=np.int64), test_per_class)
    train = ArrayDataset(sample(train_rng, y_train), torch.from_numpy(y_train))
    test = ArrayDataset(sample(test_rng, y_test), torch.from_numpy(y_test))
    width = len(str(k - 1))
    return make_ltdata(
        name="synthetic_lt",
        train=train,
        test=test,
        train_targets=y_train,
        num_classes=k,
        class_names=[f"class_{c:0{width}d}" for c in range(k)],
        input_shape=(d,),
        params=params,
        test_targets=y_test,
    )
