"""``cifar10_lt`` / ``cifar100_lt``: CIFAR-LT (Cao et al., 2019) from the standard CIFAR python-pickle files.

The pickles come from user-supplied directories, so they are read with a restricted unpickler that only
rebuilds numpy arrays and plain containers; any other global (``os.system``, ...) is refused with a
:class:`~lt_core.datasets.base.DatasetError`.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lt_core.datasets.base import (
    PROFILES,
    ArrayDataset,
    DatasetError,
    LTData,
    check_bool,
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

__all__ = ["CifarTransform", "RestrictedUnpickler", "load_cifar10_lt", "load_cifar100_lt", "safe_unpickle"]

# The normalisation of the LDAM code (used there for both CIFAR-10 and CIFAR-100).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles of bytes at protocol <= 2 go through _codecs.encode(str, "latin1").
        ("_codecs", "encode"): __import__("_codecs").encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        # Arrays pickled at protocol 5 are rebuilt with _frombuffer.
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    for module in ("builtins", "__builtin__"):
        for t in (bytes, bytearray, dict, list, tuple):
            allowed[(module, t.__name__)] = t
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy-array and builtin-container globals."""

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global, or raise DatasetError naming the refused one."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DatasetError(
                f"refusing to unpickle global {module}.{name}: only numpy arrays and plain containers are allowed"
            ) from None


def safe_unpickle(path: str, blob: bytes) -> dict[str, Any]:
    """Unpickle a CIFAR file's bytes into a dict with ``str`` keys (bytes keys are decoded as latin-1).

    Raises:
        DatasetError: naming ``path`` if the pickle references a forbidden global, is corrupt or is not a dict.
    """
    try:
        obj = RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except DatasetError as e:
        raise DatasetError(f"{path}: {e}") from None
    except Exception as e:  # corrupt pickles raise many types: UnpicklingError, EOFError, ValueError, ...
        raise DatasetError(f"{path}: not a valid CIFAR pickle file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


class CifarTransform:
    """Uint8 ``(3, H, W)`` image -> normalised float32, with optional random-crop (zero padding) + h-flip.

    Pure torch; randomness comes from torch's global generator, which DataLoader seeds per worker.

    Args:
        augment: Random crop of the original size from the image zero-padded by ``padding``, then a horizontal
            flip with probability 0.5 (the CIFAR recipe of He et al. 2016).
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel std divided by.
        padding: Zero padding on each side before the crop.
    """

    def __init__(
        self,
        augment: bool,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
        padding: int = 4,
    ) -> None:
        """Store the normalisation as ``(C, 1, 1)`` tensors."""
        self.augment = augment
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.padding = padding

    def __call__(self, img: Tensor) -> Tensor:
        """Transform one image."""
        x = img.to(torch.float32).div_(255.0)
        if self.augment:
            _, h, w = x.shape
            p = self.padding
            x = F.pad(x, (p, p, p, p))  # zero pixels, as torchvision's RandomCrop(padding=4) on the raw image
            i, j = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = x[:, i : i + h, j : j + w]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return (x - self.mean) / self.std


def _find_root(path: str, subdir: str, required: Sequence[str], label: str) -> str:
    """The folder holding ``required``: ``path`` itself or ``path/subdir``."""
    if not os.path.isdir(path):
        raise DatasetError(f"path: {path} is not a directory (expected the {label} python folder or its parent)")
    candidates = [path, os.path.join(path, subdir)]
    for root in candidates:
        if all(os.path.isfile(os.path.join(root, f)) for f in required):
            return root
    root = candidates[1] if os.path.isdir(candidates[1]) else path
    missing = [f for f in required if not os.path.isfile(os.path.join(root, f))]
    raise DatasetError(
        f"{label}: missing file(s) {missing} in {root} (expected the python version of {label}, "
        f"either that folder or its parent holding {subdir}/)"
    )


def _split(path: str, record: dict[str, Any], label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one unpickled CIFAR file."""
    for key in ("data", label_key):
        if key not in record:
            raise DatasetError(f"{path}: missing entry {key!r} (found {sorted(record)})")
    data = record["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", None)
        raise DatasetError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {shape}")
    labels = np.asarray(record[label_key])
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DatasetError(f"{path}: {label_key!r} must hold one label per image ({data.shape[0]}), got {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}: {label_key!r} must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DatasetError(f"{path}: label {int(bad[0])} outside [0, {num_classes})")
    return data.reshape(-1, 3, 32, 32), labels


def _names(record: dict[str, Any], key: str, num_classes: int, path: str) -> list[str]:
    names = record.get(key)
    if not isinstance(names, list) or len(names) != num_classes:
        raise DatasetError(f"{path}: {key!r} must be a list of {num_classes} class names")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _load_cifar_lt(
    *,
    name: str,
    path: Any,
    imbalance_factor: Any,
    profile: Any,
    seed: Any,
    augment: Any,
    num_classes: int,
    env_var: str,
    subdir: str,
    train_files: Sequence[str],
    test_files: Sequence[str],
    label_key: str,
    n_max: int,
) -> LTData:
    label = "CIFAR-10" if num_classes == 10 else "CIFAR-100"
    params: dict[str, Any] = {
        "path": resolve_path("path", path, env_var),
        "imbalance_factor": check_float("imbalance_factor", imbalance_factor, min_value=1.0),
        "profile": check_choice("profile", profile, PROFILES),
        "seed": check_int("seed", seed, min_value=0, max_value=2**32 - 1),
        "augment": check_bool("augment", augment),
    }
    meta_file = "meta" if num_classes == 100 else "batches.meta"
    required = [*train_files, *test_files] + ([meta_file] if num_classes == 100 else [])
    root = _find_root(params["path"], subdir, required, label)
    files = list(required) + (
        [meta_file] if num_classes == 10 and os.path.isfile(os.path.join(root, meta_file)) else []
    )
    paths = [os.path.join(root, f) for f in files]
    blobs = []
    for p in paths:
        with open(p, "rb") as f:
            blobs.append(f.read())
    records = {f: safe_unpickle(p, b) for f, p, b in zip(files, paths, blobs, strict=True)}

    def split(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_split(os.path.join(root, f), records[f], label_key, num_classes) for f in names]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    x_train, y_train = split(train_files)
    x_test, y_test = split(test_files)
    if meta_file in records:
        key = "fine_label_names" if num_classes == 100 else "label_names"
        class_names = _names(records[meta_file], key, num_classes, os.path.join(root, meta_file))
    else:
        class_names = CIFAR10_NAMES

    # n_max is 5000 / 500 on the real data; a smaller CIFAR-format set keeps the same shape of tail.
    present = np.bincount(y_train, minlength=num_classes)
    present = present[present > 0]
    if present.size == 0:
        raise DatasetError(f"{label}: the training files hold no images")
    counts = long_tailed_counts(
        min(n_max, int(present.min())), num_classes, params["imbalance_factor"], params["profile"]
    )
    # Selection as in the LDAM code: np.random.seed(seed); per class, shuffle its indices and keep the first n_c.
    keep = subsample_long_tailed(y_train, counts, np.random.RandomState(params["seed"]))
    train = ArrayDataset(
        torch.from_numpy(x_train[keep]), torch.from_numpy(y_train[keep]), CifarTransform(params["augment"])
    )
    test = ArrayDataset(torch.from_numpy(x_test), torch.from_numpy(y_test), CifarTransform(False))
    recipe = {**params, "path": file_digest(paths, blobs)}
    return make_ltdata(
        name=name,
        train=train,
        test=test,
        train_targets=y_train[keep],
        num_classes=num_classes,
        class_names=class_names,
        input_shape=(3, 32, 32),
        params=params,
        test_targets=y_test,
        recipe=recipe,
    )


@register_dataset(
    "cifar10_lt",
    description="CIFAR-10-LT (Cao et al. 2019) from a local CIFAR-10 python folder; balanced original test set",
    path_params=("path",),
)
def load_cifar10_lt(
    *,
    path: str | None = None,
    imbalance_factor: float = 100.0,
    profile: str = "exp",
    seed: int = 0,
    augment: bool = True,
) -> LTData:
    """CIFAR-10-LT from ``data_batch_1..5`` + ``test_batch`` (``batches.meta`` for names, optional).

    Args:
        path: The ``cifar-10-batches-py`` folder or its parent; defaults to ``$LONGTAIL_CIFAR10_DIR``.
        imbalance_factor: ``n_max / n_min``; ``n_max`` is 5000.
        profile: ``"exp"`` or ``"step"``, see :func:`long_tailed_counts`.
        seed: Seed of the per-class subsampling (``np.random.RandomState``, as the LDAM code).
        augment: Random crop (padding 4) + horizontal flip on the training split.

    Raises:
        DatasetError: on an invalid parameter, a missing file, a forbidden or corrupt pickle, or malformed arrays.
    """
    return _load_cifar_lt(
        name="cifar10_lt",
        path=path,
        imbalance_factor=imbalance_factor,
        profile=profile,
        seed=seed,
        augment=augment,
        num_classes=10,
        env_var="LONGTAIL_CIFAR10_DIR",
        subdir="cifar-10-batches-py",
        train_files=[f"data_batch_{i}" for i in range(1, 6)],
        test_files=["test_batch"],
        label_key="labels",
        n_max=5000,
    )


@register_dataset(
    "cifar100_lt",
    description="CIFAR-100-LT (Cao et al. 2019) from a local CIFAR-100 python folder; balanced original test set",
    path_params=("path",),
)
def load_cifar100_lt(
    *,
    path: str | None = None,
    imbalance_factor: float = 100.0,
    profile: str = "exp",
    seed: int = 0,
    augment: bool = True,
) -> LTData:
    """CIFAR-100-LT from ``train`` + ``test`` + ``meta`` (fine labels).

    Args:
        path: The ``cifar-100-python`` folder or its parent; defaults to ``$LONGTAIL_CIFAR100_DIR``.
        imbalance_factor: ``n_max / n_min``; ``n_max`` is 500.
        profile: ``"exp"`` or ``"step"``, see :func:`long_tailed_counts`.
        seed: Seed of the per-class subsampling (``np.random.RandomState``, as the LDAM code).
        augment: Random crop (padding 4) + horizontal flip on the training split.

    Raises:
        DatasetError: on an invalid parameter, a missing file, a forbidden or corrupt pickle, or malformed arrays.
    """
    return _load_cifar_lt(
        name="cifar100_lt",
        path=path,
        imbalance_factor=imbalance_factor,
        profile=profile,
        seed=seed,
        augment=augment,
        num_classes=100,
        env_var="LONGTAIL_CIFAR100_DIR",
        subdir="cifar-100-python",
        train_files=["train"],
        test_files=["test"],
        label_key="fine_labels",
        n_max=500,
    )
