"""Registry, result type, long-tail recipe and shared helpers for the dataset loaders.

Errors:
    ``KeyError``       unknown dataset name (lists the known ones).
    ``DatasetError``   (a ``ValueError``) unknown or invalid parameter, missing file, bad data; the message names
                       the parameter, file, array or class at fault.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetError",
    "DatasetInfo",
    "LTData",
    "load_dataset",
    "long_tailed_counts",
    "register_dataset",
    "with_validation",
]

PROFILES = ("exp", "step")


class DatasetError(ValueError):
    """A dataset could not be built: bad parameter, missing or malformed file, or unusable data."""


@dataclass(frozen=True, eq=False)
class LTData:
    """A loaded long-tailed dataset: train/test splits plus what the training code needs to know about them.

    Attributes:
        name: Registry name of the dataset.
        train: Training split, yielding ``(x: float32 Tensor of input_shape, y: int)``.
        test: Test split (balanced for the shipped datasets), same item format.
        class_names: One name per class, ``len == num_classes``.
        class_counts: ``(K,)`` int64 number of training samples per class.
        num_classes: ``K``.
        input_shape: Shape of one input, e.g. ``(64,)`` or ``(3, 32, 32)``.
        fingerprint: sha256 hex of the canonical JSON recipe (name, resolved params with paths replaced by a
            content hash, class counts). Equal fingerprints mean the same training data.
        train_targets: ``(N,)`` int64 labels of ``train`` in index order (to count classes per shard).
        params: The resolved parameters the dataset was built with.
        val: Validation split of the dataset's own (e.g. npz ``x_val``/``y_val``), or the share of the test split
            that :func:`with_validation` moved there; None when there is none.
        val_targets: ``(M,)`` int64 labels of ``val`` in index order (None when ``val`` is None).
        test_targets: ``(T,)`` int64 labels of ``test`` in index order (every shipped loader fills it).
    """

    name: str
    train: Dataset[Any]
    test: Dataset[Any]
    class_names: list[str]
    class_counts: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    fingerprint: str
    train_targets: Tensor
    params: dict[str, Any] = field(default_factory=dict)
    val: Dataset[Any] | None = None
    val_targets: Tensor | None = None
    test_targets: Tensor | None = None

    def require_all_classes(self) -> None:
        """Raise if some class has no training sample (class-count based losses would divide by zero).

        Raises:
            DatasetError: naming every class without training samples.
        """
        empty = torch.nonzero(self.class_counts == 0).flatten().tolist()
        if empty:
            names = ", ".join(f"{i} ({self.class_names[i]!r})" for i in empty)
            raise DatasetError(
                f"dataset {self.name!r}: {len(empty)} class(es) have no training samples: {names}; "
                "lower imbalance_factor or provide more data"
            )


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry.

    Attributes:
        name: Registry key.
        load: Keyword-only loader ``load(**params) -> LTData``.
        defaults: Every parameter the loader accepts, with its default.
        path_params: Parameters that are filesystem paths (the service confines them to its data root).
        description: One line for catalogues.
    """

    name: str
    load: Callable[..., LTData]
    defaults: dict[str, Any]
    path_params: tuple[str, ...] = ()
    description: str = ""


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str, *, description: str = "", path_params: tuple[str, ...] = ()
) -> Callable[[Callable[..., LTData]], Callable[..., LTData]]:
    """Decorator registering a keyword-only loader; its defaults are read from its signature.

    Raises:
        ValueError: if ``name`` is already registered or a path param is not a loader parameter.
    """

    def decorator(load: Callable[..., LTData]) -> Callable[..., LTData]:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        defaults = {}
        for p in inspect.signature(load).parameters.values():
            if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
                raise ValueError(f"loader for {name!r}: parameter {p.name!r} must be keyword-only with a default")
            defaults[p.name] = p.default
        missing = [p for p in path_params if p not in defaults]
        if missing:
            raise ValueError(f"loader for {name!r}: path_params {missing} are not parameters")
        DATASETS[name] = DatasetInfo(name, load, defaults, tuple(path_params), description)
        return load

    return decorator


def load_dataset(name: str, **params: Any) -> LTData:
    """Build a registered dataset.

    Args:
        name: A key of :data:`DATASETS`.
        **params: Overrides of the dataset's defaults.

    Raises:
        KeyError: unknown ``name``.
        DatasetError: unknown parameter, invalid value, or bad data.

    Example:
        >>> data = load_dataset("synthetic_lt", num_classes=5, n_max=20, imbalance_factor=10)
        >>> data.class_counts.tolist()
        [20, 11, 6, 3, 2]
    """
    try:
        info = DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}") from None
    unknown = sorted(set(params) - set(info.defaults))
    if unknown:
        raise DatasetError(
            f"unknown parameter(s) {unknown} for dataset {name!r}; allowed parameters: {sorted(info.defaults)}"
        )
    return info.load(**params)


def long_tailed_counts(n_max: int, num_classes: int, imbalance_factor: float, profile: str = "exp") -> list[int]:
    """Per-class sample counts of a long-tailed recipe, head class first.

    ``exp`` (Cao et al. 2019, LDAM code): ``n_i = int(n_max * (1 / IF) ** (i / (K - 1)))``.
    ``step``: the first ``ceil(K / 2)`` classes get ``n_max``, the rest ``int(n_max / IF)``.
    ``imbalance_factor == 1`` gives a balanced set. Counts may be 0 for extreme ``IF``.

    Example:
        >>> sum(long_tailed_counts(5000, 10, 100))  # CIFAR-10-LT, IF 100
        12406

    Raises:
        DatasetError: on a non-positive ``n_max`` / ``num_classes``, ``imbalance_factor < 1`` or an unknown profile.
    """
    n_max = check_int("n_max", n_max, min_value=1)
    num_classes = check_int("num_classes", num_classes, min_value=1)
    imbalance_factor = check_float("imbalance_factor", imbalance_factor, min_value=1.0)
    profile = check_choice("profile", profile, PROFILES)
    if num_classes == 1:
        return [n_max]
    if profile == "exp":
        mu = 1.0 / imbalance_factor
        return [int(n_max * (mu ** (i / (num_classes - 1.0)))) for i in range(num_classes)]
    head = (num_classes + 1) // 2
    return [n_max] * head + [int(n_max / imbalance_factor)] * (num_classes - head)


class ArrayDataset(Dataset[tuple[Tensor, int]]):
    """In-memory dataset over a float32 input tensor and int64 labels, with an optional per-item transform.

    Args:
        x: ``(N, *input_shape)`` float32 inputs, or raw data (e.g. uint8 images) that ``transform`` turns into them.
        targets: ``(N,)`` int64 labels.
        transform: Called on each ``x[i]`` (e.g. augmentation); must return a float32 tensor.
    """

    def __init__(self, x: Tensor, targets: Tensor, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        """Wrap the tensors (not copied)."""
        if x.shape[0] != targets.shape[0]:
            raise DatasetError(f"x has {x.shape[0]} rows but targets has {targets.shape[0]}")
        self.x = x
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        """Number of samples."""
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """``(x, y)`` of sample ``index``, ``x`` transformed when a transform is set."""
        x = self.x[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[index])


# ----------------------------------------------------------------------------------------------------------------
# Parameter checks (each message names the parameter).


def check_int(name: str, value: Any, *, min_value: int | None = None, max_value: int | None = None) -> int:
    """Return ``value`` as an int, or raise a DatasetError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DatasetError(f"parameter {name!r} must be an integer, got {value!r}")
    result = int(value)
    if (min_value is not None and result < min_value) or (max_value is not None and result > max_value):
        raise DatasetError(f"parameter {name!r} must be in [{min_value}, {max_value}], got {result}")
    return result


def check_float(name: str, value: Any, *, min_value: float | None = None, positive: bool = False) -> float:
    """Return ``value`` as a finite float, or raise a DatasetError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise DatasetError(f"parameter {name!r} must be a finite number, got {value!r}")
    result = float(value)
    if min_value is not None and result < min_value:
        raise DatasetError(f"parameter {name!r} must be >= {min_value}, got {result}")
    if positive and result <= 0:
        raise DatasetError(f"parameter {name!r} must be > 0, got {result}")
    return result


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, or raise a DatasetError naming ``name``."""
    if value not in choices:
        raise DatasetError(f"parameter {name!r} must be one of {list(choices)}, got {value!r}")
    return cast(str, value)  # equal to one of the str choices


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, or raise a DatasetError naming ``name``."""
    if not isinstance(value, bool):
        raise DatasetError(f"parameter {name!r} must be true or false, got {value!r}")
    return value


def resolve_path(name: str, value: Any, env_var: str | None = None) -> str:
    """Return an existing path from the parameter ``name`` (or ``env_var`` when it is None)."""
    if value is None and env_var is not None:
        value = os.environ.get(env_var) or None
    if value is None:
        hint = f" or set {env_var}" if env_var else ""
        raise DatasetError(f"parameter {name!r} is required{hint}")
    if not isinstance(value, str | os.PathLike):
        raise DatasetError(f"parameter {name!r} must be a path string, got {value!r}")
    path = os.path.abspath(os.fspath(value))
    if not os.path.exists(path):
        raise DatasetError(f"{name}: no such file or directory: {path}")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Building the result.


def file_digest(paths: Sequence[str], blobs: Sequence[bytes] | None = None) -> dict[str, Any]:
    """Location- and name-free identity of data files: their sizes and a sha256 of their contents, in order."""
    h = hashlib.sha256()
    sizes = []
    for i, path in enumerate(paths):
        data = blobs[i] if blobs is not None else None
        if data is None:
            with open(path, "rb") as f:
                data = f.read()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
        sizes.append(len(data))
    return {"sizes": sizes, "sha256": h.hexdigest()}


def fingerprint(name: str, recipe: dict[str, Any], class_counts: Sequence[int]) -> str:
    """sha256 hex of the canonical JSON of ``{name, params, class_counts}``."""
    payload = {"name": name, "params": recipe, "class_counts": [int(c) for c in class_counts]}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def subsample_long_tailed(
    targets: np.ndarray, counts: Sequence[int], rng: np.random.RandomState | np.random.Generator
) -> np.ndarray:
    """Indices keeping ``counts[c]`` random samples of each class ``c`` (all of them if fewer), in class order.

    The order of random draws follows the LDAM code: for each class, shuffle its indices, take the first ``n_c``.
    """
    keep = []
    for c, n_c in enumerate(counts):
        idx = np.where(targets == c)[0]
        rng.shuffle(idx)
        keep.append(idx[:n_c])
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def make_ltdata(
    *,
    name: str,
    train: Dataset[Any],
    test: Dataset[Any],
    train_targets: np.ndarray | Tensor,
    num_classes: int,
    class_names: Sequence[str],
    input_shape: Sequence[int],
    params: dict[str, Any],
    recipe: dict[str, Any] | None = None,
    test_targets: np.ndarray | Tensor | None = None,
    val: Dataset[Any] | None = None,
    val_targets: np.ndarray | Tensor | None = None,
) -> LTData:
    """Assemble an :class:`LTData`, counting classes and computing the fingerprint.

    Args:
        name: Registry name.
        train: Training split.
        test: Test split.
        train_targets: ``(N,)`` labels of ``train`` in index order.
        num_classes: ``K``.
        class_names: ``K`` names.
        input_shape: Shape of one input.
        params: Resolved parameters, stored on the result.
        recipe: The params as they enter the fingerprint (paths replaced by :func:`file_digest`);
            defaults to ``params``.
        test_targets: ``(T,)`` labels of ``test`` in index order.
        val: The dataset's own validation split, if it has one.
        val_targets: ``(M,)`` labels of ``val`` in index order (required with ``val``).
    """
    if (val is None) != (val_targets is None):
        raise DatasetError("a validation split needs both val and val_targets")
    targets = torch.as_tensor(np.asarray(train_targets), dtype=torch.int64)
    counts = torch.bincount(targets, minlength=num_classes)
    return LTData(
        name=name,
        train=train,
        test=test,
        class_names=[str(c) for c in class_names],
        class_counts=counts,
        num_classes=int(num_classes),
        input_shape=tuple(int(s) for s in input_shape),
        fingerprint=fingerprint(name, params if recipe is None else recipe, counts.tolist()),
        train_targets=targets,
        params=dict(params),
        val=val,
        val_targets=None if val_targets is None else torch.as_tensor(np.asarray(val_targets), dtype=torch.int64),
        test_targets=None if test_targets is None else torch.as_tensor(np.asarray(test_targets), dtype=torch.int64),
    )


def _targets_of(dataset: Dataset[Any]) -> Tensor:
    """``(N,)`` int64 labels of a dataset in index order (its ``targets`` when it has them, else item by item)."""
    targets = getattr(dataset, "targets", None)
    if isinstance(targets, Tensor):
        return targets.to(torch.int64)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)  # type: ignore[arg-type]


def with_validation(data: LTData, fraction: float, seed: int) -> LTData:
    """The dataset with a validation split: its own when it has one, else a stratified share of its test split.

    Without ``data.val``, a seeded ``fraction`` of each class's test items moves to ``val`` (per class,
    ``round(fraction * n_c)``, at least one item on each side); the rest stay in ``test``. The training split is
    untouched. Either way the fingerprint also covers the val/test partition (``val_fraction`` and ``seed``, or the
    dataset's own split), so equal fingerprints mean the same training, validation and test data.

    Args:
        data: A loaded dataset.
        fraction: The share of each class's test items that goes to validation, in (0, 1).
        seed: Seed of the split (the dataset's seed, so every trial of a job gets the same split).

    Raises:
        DatasetError: naming ``val_fraction`` when ``fraction`` is outside (0, 1) or a class of the test split has
            too few items to keep one on each side.

    Example:
        >>> data = load_dataset("synthetic_lt", num_classes=3, n_max=10, test_per_class=4)
        >>> split = with_validation(data, 0.5, seed=0)
        >>> len(split.val), len(split.test), split.val_targets.bincount().tolist()
        (6, 6, [2, 2, 2])
    """
    if data.val is not None:
        if data.val_targets is None:
            raise DatasetError(f"dataset {data.name!r}: a validation split without val_targets")
        recipe = {"base": data.fingerprint, "validation": "own"}
        return replace(data, fingerprint=_digest(recipe))
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < float(fraction) < 1:
        raise DatasetError(f"val_fraction must be in (0, 1), got {fraction!r}")
    fraction = float(fraction)
    targets = data.test_targets if data.test_targets is not None else _targets_of(data.test)
    rng = np.random.default_rng(check_int("seed", seed, min_value=0))
    labels = targets.numpy()
    val_idx, test_idx, short = [], [], []
    for c in range(data.num_classes):
        idx = np.flatnonzero(labels == c)
        if idx.size == 0:
            continue  # a class absent from the test split is absent from both
        n_val = int(round(fraction * idx.size))
        if n_val < 1 or n_val > idx.size - 1:
            short.append(f"{c} ({data.class_names[c]!r}: {idx.size} test item(s))")
            continue
        idx = rng.permutation(idx)
        val_idx.append(np.sort(idx[:n_val]))
        test_idx.append(np.sort(idx[n_val:]))
    if short:
        listed = ", ".join(short[:10]) + (f" and {len(short) - 10} more" if len(short) > 10 else "")
        raise DatasetError(
            f"val_fraction {fraction:g} leaves no validation or no test item for class(es) {listed}: every class "
            "needs at least one item on each side; choose another val_fraction or a larger test split"
        )
    val_idx_t = torch.from_numpy(np.concatenate(val_idx)) if val_idx else torch.zeros(0, dtype=torch.int64)
    test_idx_t = torch.from_numpy(np.concatenate(test_idx)) if test_idx else torch.zeros(0, dtype=torch.int64)
    recipe = {"base": data.fingerprint, "val_fraction": fraction, "val_seed": int(seed)}
    return replace(
        data,
        val=_subset(data.test, val_idx_t),
        val_targets=targets[val_idx_t],
        test=_subset(data.test, test_idx_t),
        test_targets=targets[test_idx_t],
        fingerprint=_digest(recipe),
    )


def _subset(dataset: Dataset[Any], indices: Tensor) -> Dataset[Any]:
    """Rows ``indices`` of ``dataset``: an :class:`ArrayDataset` stays one, anything else becomes a ``Subset``."""
    if isinstance(dataset, ArrayDataset):
        return ArrayDataset(dataset.x[indices], dataset.targets[indices], dataset.transform)
    from torch.utils.data import Subset

    return Subset(dataset, indices.tolist())


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
