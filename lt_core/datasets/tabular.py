"""``tabular``: rows of numeric features and a label column, from CSV or Parquet files (read with pyarrow).

Integer labels are class indices (``K`` = largest label + 1); string labels are mapped to classes in sorted order
(those of the training file; a label the training file lacks is an error).
"""

from __future__ import annotations

import os
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
    make_ltdata,
    register_dataset,
    resolve_path,
)
from lt_core.datasets.images import long_tail_subsample

__all__ = ["load_tabular", "read_table"]

MAX_CLASSES = 100_000


def read_table(param: str, path: str) -> Any:
    """A ``pyarrow.Table`` from a ``.csv`` or ``.parquet`` file (by extension)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".csv":
            return pacsv.read_csv(path)
        if ext in (".parquet", ".pq"):
            return pq.read_table(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: cannot read as {ext[1:]} ({e})") from None
    raise DatasetError(f"{param}: {path} must be a .csv or .parquet file")


def _column(table: Any, path: str, name: str) -> Any:
    if name not in table.column_names:
        raise DatasetError(f"{path}: no column {name!r} (columns: {table.column_names[:50]})")
    column = table.column(name)
    if column.null_count:
        raise DatasetError(f"{path}: column {name!r} has {column.null_count} empty value(s)")
    return column


def _features(table: Any, path: str, columns: list[str]) -> np.ndarray:
    import pyarrow as pa

    out = []
    for name in columns:
        column = _column(table, path, name)
        t = column.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise DatasetError(f"{path}: feature column {name!r} is not numeric (type {t})")
        values = column.to_numpy(zero_copy_only=False).astype(np.float32)
        if not np.isfinite(values).all():
            raise DatasetError(f"{path}: feature column {name!r} holds NaN or infinite values")
        out.append(values)
    return np.stack(out, axis=1) if out else np.zeros((table.num_rows, 0), dtype=np.float32)


def _labels(table: Any, path: str, label: str) -> np.ndarray:
    import pyarrow as pa

    column = _column(table, path, label)
    t = column.type
    values: np.ndarray = column.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t):
        return values.astype(np.int64)
    if pa.types.is_floating(t):
        bad = values[~np.isfinite(values) | (np.round(values) != values)]
        if bad.size:
            raise DatasetError(f"{path}: label column {label!r} holds {float(bad[0])}, not a class")
        return values.astype(np.int64)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return values.astype(str)
    raise DatasetError(f"{path}: label column {label!r} must hold integers or strings, got type {t}")


@register_dataset(
    "tabular",
    description="your table (CSV or Parquet): numeric feature columns and a label column, train/val/test files",
    path_params=("train", "val", "test"),
)
def load_tabular(
    *,
    train: str | None = None,
    val: str | None = None,
    test: str | None = None,
    label: str = "label",
    features: list[str] | None = None,
    imbalance_factor: float | None = None,
    profile: str = "exp",
    seed: int = 0,
) -> LTData:
    """Load numeric features and labels from CSV or Parquet files.

    Args:
        train: Training file (``.csv`` or ``.parquet``).
        val: Validation file, or None (the validation protocol then splits the test set).
        test: Test file.
        label: The label column.
        features: Feature columns; None takes every column but ``label`` (of the training file, in its order).
        imbalance_factor: None keeps the training split as is; otherwise it is subsampled long-tailed.
        profile: ``"exp"`` or ``"step"``.
        seed: Seed of the subsampling.

    Raises:
        DatasetError: naming the file and column at fault (a missing label column, a non-numeric feature).
    """
    files = {"train": resolve_path("train", train), "test": resolve_path("test", test)}
    if val is not None:
        files["val"] = resolve_path("val", val)
    if not isinstance(label, str) or not label:
        raise DatasetError(f"parameter 'label' must be a column name, got {label!r}")
    if features is not None and (
        not isinstance(features, list | tuple) or not all(isinstance(f, str) for f in features) or not features
    ):
        raise DatasetError(f"parameter 'features' must be a non-empty list of column names, got {features!r}")
    params: dict[str, Any] = {
        **{s: files.get(s) for s in ("train", "val", "test")},
        "label": label,
        "features": None if features is None else list(features),
        "imbalance_factor": None
        if imbalance_factor is None
        else check_float("imbalance_factor", imbalance_factor, min_value=1.0),
        "profile": check_choice("profile", profile, PROFILES),
        "seed": check_int("seed", seed, min_value=0, max_value=2**32 - 1),
    }
    for s, p in files.items():
        if not os.path.isfile(p):
            raise DatasetError(f"{s}: {p} is not a file")
    tables = {s: read_table(s, p) for s, p in files.items()}
    columns = params["features"] or [c for c in tables["train"].column_names if c != label]
    if label in columns:
        raise DatasetError(f"parameter 'features' lists the label column {label!r}")
    if not columns:
        raise DatasetError(f"{files['train']}: no feature columns besides the label {label!r}")
    xs = {s: _features(t, files[s], columns) for s, t in tables.items()}
    raw = {s: _labels(t, files[s], label) for s, t in tables.items()}

    if any(y.dtype.kind == "U" for y in raw.values()):
        if not all(y.dtype.kind == "U" for y in raw.values()):
            raise DatasetError(f"label column {label!r} holds strings in some files and numbers in others")
        names = sorted(set(raw["train"].tolist()))
        index = {n: i for i, n in enumerate(names)}
        ys = {}
        for s, y in raw.items():
            unknown = sorted(set(y.tolist()) - set(index))
            if unknown:
                raise DatasetError(f"{files[s]}: label {unknown[0]!r} does not occur in the training file")
            ys[s] = np.asarray([index[v] for v in y.tolist()], dtype=np.int64)
    else:
        ys = raw
        for s, y in ys.items():
            if y.size and y.min() < 0:
                raise DatasetError(f"{files[s]}: label {int(y.min())} is negative")
        k = max((int(y.max()) for y in ys.values() if y.size), default=-1) + 1
        if k == 0:
            raise DatasetError(f"{files['train']}: no rows")
        if k > MAX_CLASSES:
            raise DatasetError(f"label {k - 1} in column {label!r} exceeds {MAX_CLASSES - 1}")
        names = [str(c) for c in range(k)]
    if ys["train"].size == 0:
        raise DatasetError(f"{files['train']}: no rows")

    keep = long_tail_subsample(ys["train"], len(names), params)
    if keep is not None:
        xs["train"], ys["train"] = xs["train"][keep], ys["train"][keep]

    def dataset(s: str) -> ArrayDataset:
        return ArrayDataset(torch.from_numpy(np.ascontiguousarray(xs[s])), torch.from_numpy(ys[s]))

    recipe = {
        **{k: v for k, v in params.items() if k not in files},
        "features": columns,
        "files": {s: file_digest([p]) for s, p in files.items()},
    }
    return make_ltdata(
        name="tabular",
        train=dataset("train"),
        test=dataset("test"),
        train_targets=ys["train"],
        num_classes=len(names),
        class_names=names,
        input_shape=(len(columns),),
        params={**params, "features": columns if features is not None else None},
        recipe=recipe,
        val=dataset("val") if "val" in files else None,
        val_targets=ys.get("val"),
        test_targets=ys["test"],
    )
