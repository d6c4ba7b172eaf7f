"""``npz``: a user's ``.npz`` with ``x_train, y_train, x_test, y_test`` (optionally ``x_val, y_val``), long-tailed."""

from __future__ import annotations

import io
import os
import zipfile
from typing import Any

import numpy as np
import torch

from lt_core.datasets.base import (
    PROFILES,
    ArrayDataset,
    DatasetError,
    LTData,
    check_choice,
    check_float,
    check_int,
    file_digest,
    long_tailed_counts,
    make_ltdata,
    register_dataset,
    resolve_path,
    subsample_long_tailed,
)

__all__ = ["load_npz"]

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
VAL_ARRAYS = ("x_val", "y_val")  # optional: the dataset's own validation split
MAX_CLASSES = 100_000


def _read(path: str, blob: bytes) -> dict[str, np.ndarray]:
    name = os.path.basename(path)
    try:
        loaded = np.load(io.BytesIO(blob), allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{name}: not a valid .npz file ({e})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DatasetError(f"{name}: not a valid .npz file (it holds a single array, expected {list(ARRAYS)})")
    with loaded:
        missing = [k for k in ARRAYS if k not in loaded.files]
        if missing:
            raise DatasetError(f"{name}: missing array(s) {missing} (found {sorted(loaded.files)})")
        present_val = [k for k in VAL_ARRAYS if k in loaded.files]
        if len(present_val) == 1:
            missing_val = next(k for k in VAL_ARRAYS if k not in present_val)
            raise DatasetError(f"{name}: has {present_val[0]!r} but not {missing_val!r} (a validation split has both)")
        arrays = {}
        for k in (*ARRAYS, *present_val):
            try:
                arrays[k] = loaded[k]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
                raise DatasetError(f"{name}: array {k!r} cannot be read ({e})") from None
    return arrays


def _features(split: str, x: np.ndarray) -> np.ndarray:
    key = f"x_{split}"
    if x.ndim < 2:
        raise DatasetError(f"{key} must have shape (N, *features), got {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.issubdtype(x.dtype, np.complexfloating):
        raise DatasetError(f"{key} must be numeric, got dtype {x.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DatasetError(f"{key} contains NaN or inf values (in float32)")
    return x


def _labels(split: str, y: np.ndarray, n: int) -> np.ndarray:
    key = f"y_{split}"
    if y.ndim != 1:
        raise DatasetError(f"{key} must be 1-D (one label per sample), got shape {y.shape}")
    if y.shape[0] != n:
        raise DatasetError(f"x_{split} has {n} samples but {key} has {y.shape[0]} labels")
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        bad = y[~np.isfinite(y) | (np.round(y) != y)]
        if bad.size == 0:
            return y.astype(np.int64)
        raise DatasetError(f"{key} must hold integer labels, got {float(bad[0])}")
    raise DatasetError(f"{key} must hold integer labels, got dtype {y.dtype}")


@register_dataset(
    "npz",
    description="your .npz with x_train, y_train, x_test, y_test; used as is or subsampled long-tailed",
    path_params=("path",),
)
def load_npz(
    *,
    path: str | None = None,
    num_classes: int | None = None,
    imbalance_factor: float | None = None,
    profile: str = "exp",
    seed: int = 0,
    class_names: list[str] | None = None,
) -> LTData:
    """Load ``x_train, y_train, x_test, y_test`` from an ``.npz`` (read with ``allow_pickle=False``).

    Optional ``x_val, y_val`` are the dataset's own validation split (used as is, never subsampled); without them
    a job moves a share of the test split to validation (``lt_core.datasets.with_validation``).

    Args:
        path: The ``.npz`` file.
        num_classes: ``K``; ``None`` infers ``max label + 1`` over both splits.
        imbalance_factor: ``None`` keeps the training split as is; otherwise each class ``c`` keeps a seeded random
            ``long_tailed_counts(n_max, K, imbalance_factor, profile)[c]`` samples (``n_max`` = largest class;
            class 0 is the head), or all it has if fewer.
        profile: ``"exp"`` or ``"step"``.
        seed: Seed of the subsampling.
        class_names: ``K`` names; defaults to ``"0" .. "K-1"``.

    Raises:
        DatasetError: naming the file, array, split or parameter at fault.
    """
    params: dict[str, Any] = {
        "path": resolve_path("path", path),
        "num_classes": None if num_classes is None else check_int("num_classes", num_classes, min_value=1),
        "imbalance_factor": None
        if imbalance_factor is None
        else check_float("imbalance_factor", imbalance_factor, min_value=1.0),
        "profile": check_choice("profile", profile, PROFILES),
        "seed": check_int("seed", seed, min_value=0, max_value=2**32 - 1),
        "class_names": None,
    }
    if params["num_classes"] is not None and params["num_classes"] > MAX_CLASSES:
        raise DatasetError(f"parameter 'num_classes' must be <= {MAX_CLASSES}, got {params['num_classes']}")
    if not os.path.isfile(params["path"]):
        raise DatasetError(f"path: {params['path']} is not a file")
    with open(params["path"], "rb") as f:
        blob = f.read()
    arrays = _read(params["path"], blob)

    x_train = _features("train", arrays["x_train"])
    x_test = _features("test", arrays["x_test"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            f"x_train samples have shape {x_train.shape[1:]} but x_test samples have shape {x_test.shape[1:]}"
        )
    y_train = _labels("train", arrays["y_train"], x_train.shape[0])
    y_test = _labels("test", arrays["y_test"], x_test.shape[0])
    x_val = y_val = None
    if "x_val" in arrays:
        x_val = _features("val", arrays["x_val"])
        if x_val.shape[1:] != x_train.shape[1:]:
            raise DatasetError(
                f"x_train samples have shape {x_train.shape[1:]} but x_val samples have shape {x_val.shape[1:]}"
            )
        y_val = _labels("val", arrays["y_val"], x_val.shape[0])

    k = params["num_classes"]
    if k is None:
        if y_train.size + y_test.size == 0:
            raise DatasetError("cannot infer num_classes: y_train and y_test are empty")
        k = int(max(y_train.max(initial=0), y_test.max(initial=0), -1 if y_val is None else y_val.max(initial=0))) + 1
        if k > MAX_CLASSES:
            raise DatasetError(f"inferred num_classes {k} (max label + 1) exceeds {MAX_CLASSES}")
    for split, y in (("train", y_train), ("test", y_test), *((("val", y_val),) if y_val is not None else ())):
        bad = y[(y < 0) | (y >= k)]
        if bad.size:
            raise DatasetError(f"y_{split} has label {int(bad[0])} outside [0, {k}) (num_classes={k})")

    if class_names is None:
        names = [str(c) for c in range(k)]
    else:
        if not isinstance(class_names, list | tuple) or not all(isinstance(n, str) for n in class_names):
            raise DatasetError(f"parameter 'class_names' must be a list of strings, got {class_names!r}")
        if len(class_names) != k:
            raise DatasetError(f"parameter 'class_names' has {len(class_names)} names but there are {k} classes")
        names = list(class_names)
        params["class_names"] = names

    if params["imbalance_factor"] is not None and y_train.size:
        n_max = int(np.bincount(y_train, minlength=k).max())
        counts = long_tailed_counts(n_max, k, params["imbalance_factor"], params["profile"])
        keep = subsample_long_tailed(y_train, counts, np.random.RandomState(params["seed"]))
        x_train, y_train = x_train[keep], y_train[keep]

    train = ArrayDataset(torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(y_train))
    test = ArrayDataset(torch.from_numpy(np.ascontiguousarray(x_test)), torch.from_numpy(y_test))
    val = None
    if x_val is not None:
        val = ArrayDataset(torch.from_numpy(np.ascontiguousarray(x_val)), torch.from_numpy(y_val))
    recipe = {**params, "path": file_digest([params["path"]], [blob])}
    return make_ltdata(
        name="npz",
        train=train,
        test=test,
        train_targets=y_train,
        num_classes=k,
        class_names=names,
        input_shape=x_train.shape[1:],
        params=params,
        recipe=recipe,
        test_targets=y_test,
        val=val,
        val_targets=y_val,
    )
