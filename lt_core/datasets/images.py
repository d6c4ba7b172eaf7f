"""Image files on disk: ``image_folder`` (one sub-folder per class) and ``file_list`` (``path label`` lines).

Nothing is decoded when a dataset is built: the loaders read folder listings or list files, and keep the relative
paths (one packed byte buffer, no Python object per image) and int64 labels. :class:`ImageFiles` decodes one image
per item with Pillow (in DataLoader worker processes, see ``lt_core.engine.loader_options``), resizes its shorter
side to ``load_size`` and center-crops it to a ``(3, load_size, load_size)`` uint8 tensor. Augmentation and
normalisation run batched on the training device (:class:`ImageBatchTransform`, kornia), picked up by the engine
from the dataset's ``batch_transform``.

Errors (``DatasetError`` naming the file, and the line of a list file): a list line that does not parse, a label
out of range, an image path that leaves the root, an empty class folder, a missing or unreadable image (raised by
``__getitem__``, naming the path).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from lt_core.datasets.base import (
    PROFILES,
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

__all__ = ["IMAGE_EXTENSIONS", "ImageBatchTransform", "ImageFiles", "load_file_list", "load_image_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Images are decoded at load_size = image_size / EVAL_CROP_FRACTION (256 for 224, as ImageNet evaluation does).
EVAL_CROP_FRACTION = 0.875
MAX_CLASSES = 100_000


class ImageFiles(Dataset[tuple[Tensor, int]]):
    """Images decoded lazily, per item, from paths relative to ``root``.

    Args:
        root: Folder the paths are relative to.
        paths: Relative paths (``str``), one per sample.
        targets: ``(N,)`` int64 labels.
        load_size: Items are ``(3, load_size, load_size)`` uint8: shorter side resized, then center-cropped.
        batch_transform: Applied by the engine to each batch on the training device (augmentation, normalisation).

    Memory: the paths live in one ``uint8`` buffer plus an ``int64`` offset array (about the bytes of the paths
    themselves); no Python object per image, so forked DataLoader workers share them without copy-on-access.
    """

    lazy = True  # does I/O and decoding per item: lt_core.engine.loader_options gives it worker processes

    def __init__(
        self,
        root: str,
        paths: Sequence[str],
        targets: Tensor,
        load_size: int,
        batch_transform: nn.Module | None = None,
    ) -> None:
        """Pack the paths."""
        if len(paths) != len(targets):
            raise DatasetError(f"{len(paths)} paths but {len(targets)} labels")
        encoded = [p.encode("utf-8", "surrogateescape") for p in paths]
        self.root = root
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self.targets = torch.as_tensor(targets, dtype=torch.int64)
        self.load_size = int(load_size)
        self.batch_transform = batch_transform

    def __len__(self) -> int:
        """Number of images."""
        return int(self.targets.shape[0])

    def relpath(self, index: int) -> str:
        """The path of image ``index``, relative to ``root``."""
        start, end = self._offsets[index], self._offsets[index + 1]
        return self._blob[start:end].tobytes().decode("utf-8", "surrogateescape")

    def path(self, index: int) -> str:
        """The absolute path of image ``index``."""
        return os.path.join(self.root, self.relpath(index))

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """``(image (3, L, L) uint8, label)``; raises DatasetError naming the file if it cannot be decoded."""
        return decode_image(self.path(index), self.load_size), int(self.targets[index])


def decode_image(path: str, size: int) -> Tensor:
    """Decode ``path`` as RGB, resize its shorter side to ``size`` and center-crop: ``(3, size, size)`` uint8."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when the image is much larger
            image = image.convert("RGB")
            w, h = image.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            left, top = (nw - size) // 2, (nh - size) // 2
            image = image.resize((nw, nh), Image.Resampling.BILINEAR, box=None, reducing_gap=None)
            image = image.crop((left, top, left + size, top + size))
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise DatasetError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


class ImageBatchTransform(nn.Module):
    """Batched augmentation + normalisation of uint8 images on their device (kornia).

    Train (``augment=True``): random resized crop to ``image_size`` (scale 0.08-1, ratio 3/4-4/3) and a horizontal
    flip. Eval: resize to ``load_size`` and center crop to ``image_size``. Then ``(x / 255 - mean) / std``.

    Shape:
        - Input: ``(N, 3, L, L)`` uint8 (or float in [0, 255]).
        - Output: ``(N, 3, image_size, image_size)`` float32.
    """

    mean: Tensor  # (1, 3, 1, 1) buffers, registered in __init__
    std: Tensor

    def __init__(
        self,
        image_size: int,
        load_size: int,
        *,
        augment: bool,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        """Build the kornia pipeline."""
        super().__init__()
        import kornia.augmentation as K

        self.image_size, self.load_size, self.augment = int(image_size), int(load_size), bool(augment)
        if augment:
            self.ops = nn.Sequential(
                K.RandomResizedCrop((image_size, image_size), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
                K.RandomHorizontalFlip(),
            )
        else:
            self.ops = nn.Sequential(K.Resize(load_size), K.CenterCrop(image_size))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Augment (train) or crop (eval), then normalise."""
        if self.mean.device != x.device:
            self.to(x.device)
        x = x.float().div_(255.0)
        x = self.ops(x)
        return (x - self.mean) / self.std


# ----------------------------------------------------------------------------------------------------------------
# Shared parameter handling.


def _check_rgb(name: str, value: Any) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise DatasetError(f"parameter {name!r} must be 3 numbers (one per RGB channel), got {value!r}")
    out = tuple(check_float(name, v) for v in value)
    if name == "std" and any(v <= 0 for v in out):
        raise DatasetError(f"parameter 'std' must be positive, got {list(out)}")
    return out  # type: ignore[return-value]


def _image_params(
    image_size: Any, augment: Any, imbalance_factor: Any, profile: Any, seed: Any, mean: Any, std: Any
) -> dict[str, Any]:
    return {
        "image_size": check_int("image_size", image_size, min_value=8, max_value=1024),
        "augment": check_bool("augment", augment),
        "imbalance_factor": None
        if imbalance_factor is None
        else check_float("imbalance_factor", imbalance_factor, min_value=1.0),
        "profile": check_choice("profile", profile, PROFILES),
        "seed": check_int("seed", seed, min_value=0, max_value=2**32 - 1),
        "mean": list(_check_rgb("mean", mean)),
        "std": list(_check_rgb("std", std)),
    }


def long_tail_subsample(targets: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray | None:
    """Indices making a training split long-tailed per ``imbalance_factor``/``profile``/``seed``, or None."""
    if params["imbalance_factor"] is None or targets.size == 0:
        return None
    n_max = int(np.bincount(targets, minlength=k).max())
    counts = long_tailed_counts(n_max, k, params["imbalance_factor"], params["profile"])
    return subsample_long_tailed(targets, counts, np.random.RandomState(params["seed"]))


def _listing_digest(paths: Sequence[str], targets: np.ndarray) -> str:
    """sha256 of the (relative path, label) listing: the identity of an image split without reading the images."""
    h = hashlib.sha256()
    for p, t in zip(paths, targets.tolist(), strict=True):
        h.update(p.encode("utf-8", "surrogateescape") + b"\0" + str(t).encode() + b"\n")
    return h.hexdigest()


def _build(
    name: str,
    root: str,
    splits: dict[str, tuple[list[str], np.ndarray] | None],
    class_names: list[str],
    params: dict[str, Any],
    recipe: dict[str, Any],
) -> LTData:
    k = len(class_names)
    train_paths, train_targets = splits["train"]  # type: ignore[misc]
    keep = long_tail_subsample(train_targets, k, params)
    if keep is not None:
        train_paths = [train_paths[i] for i in keep]
        train_targets = train_targets[keep]
    size = params["image_size"]
    load_size = max(size, round(size / EVAL_CROP_FRACTION))
    norm = {"mean": params["mean"], "std": params["std"]}
    train_tf = ImageBatchTransform(size, load_size, augment=params["augment"], **norm)
    eval_tf = ImageBatchTransform(size, load_size, augment=False, **norm)

    def dataset(split: str, transform: nn.Module) -> ImageFiles | None:
        entry = splits.get(split)
        if entry is None:
            return None
        paths, targets = entry if split != "train" else (train_paths, train_targets)
        return ImageFiles(root, paths, torch.from_numpy(targets), load_size, transform)

    val = dataset("val", eval_tf)
    test = dataset("test", eval_tf)
    listings = {s: (e if s != "train" else (train_paths, train_targets)) for s, e in splits.items() if e}
    digests = {s: _listing_digest(*e) for s, e in listings.items()}
    return make_ltdata(
        name=name,
        train=dataset("train", train_tf),  # type: ignore[arg-type]
        test=test,  # type: ignore[arg-type]
        train_targets=train_targets,
        num_classes=k,
        class_names=class_names,
        input_shape=(3, size, size),
        params=params,
        recipe={**recipe, "listings": digests},
        val=val,
        val_targets=None if val is None else splits["val"][1],  # type: ignore[index]
        test_targets=splits["test"][1],  # type: ignore[index]
    )


# ----------------------------------------------------------------------------------------------------------------
# image_folder


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _split_dir(root: str, split: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"parameter {split!r} must be a folder name under root, got {value!r}")
    path = os.path.realpath(os.path.join(root, value))
    if os.path.isabs(value) or not _inside(path, os.path.realpath(root)):
        raise DatasetError(f"parameter {split!r}: {value!r} leaves the root folder {root}")
    if not os.path.isdir(path):
        raise DatasetError(f"parameter {split!r}: no such folder {path}")
    return path


def _scan_class(folder: str, rel_to: str) -> list[str]:
    """Image files under ``folder`` (recursively, sorted), relative to ``rel_to``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for f in sorted(filenames):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(os.path.relpath(os.path.join(dirpath, f), rel_to))
    return out


def _scan_split(root: str, split_dir: str, classes: list[str] | None) -> tuple[list[str], list[str], np.ndarray]:
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())  # torchvision's ImageFolder order
    if classes is None:
        if not found:
            raise DatasetError(f"{split_dir}: no class sub-folders")
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DatasetError(f"{split_dir}: class folder(s) {extra[:5]} are not classes of the training split")
    index = {c: i for i, c in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for c in found:
        files = _scan_class(os.path.join(split_dir, c), root)
        if not files:
            raise DatasetError(f"{os.path.join(split_dir, c)}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)})")
        paths += files
        labels += [index[c]] * len(files)
    return classes, paths, np.asarray(labels, dtype=np.int64)


@register_dataset(
    "image_folder",
    description="your images, one sub-folder per class (torchvision ImageFolder layout), train/val/test folders",
    path_params=("root",),
)
def load_image_folder(
    *,
    root: str | None = None,
    train: str = "train",
    val: str | None = None,
    test: str = "test",
    image_size: int = 224,
    augment: bool = True,
    imbalance_factor: float | None = None,
    profile: str = "exp",
    seed: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> LTData:
    """Images in ``root/<split>/<class>/**/<file>``; classes are the training split's sorted sub-folder names.

    Args:
        root: The folder holding the split folders.
        train: Training split folder, relative to ``root``.
        val: Validation split folder, or None (the validation protocol then splits the test set).
        test: Test split folder.
        image_size: Side of the square crop the model sees.
        augment: Random resized crop + flip on the training split (else the eval resize + center crop).
        imbalance_factor: None keeps the training split as is; otherwise it is subsampled long-tailed.
        profile: ``"exp"`` or ``"step"``.
        seed: Seed of the subsampling.
        mean: Normalisation mean per RGB channel (ImageNet's by default).
        std: Normalisation std per RGB channel.

    Raises:
        DatasetError: naming the folder or parameter at fault (an empty class folder, a split folder outside root).
    """
    root_path = resolve_path("root", root)
    if not os.path.isdir(root_path):
        raise DatasetError(f"root: {root_path} is not a folder")
    params: dict[str, Any] = {
        "root": root_path,
        "train": train,
        "val": val,
        "test": test,
        **_image_params(image_size, augment, imbalance_factor, profile, seed, mean, std),
    }
    classes, train_paths, train_targets = _scan_split(root_path, _split_dir(root_path, "train", train), None)
    if len(classes) > MAX_CLASSES:
        raise DatasetError(f"{root_path}: {len(classes)} classes, more than {MAX_CLASSES}")
    splits: dict[str, Any] = {"train": (train_paths, train_targets)}
    for split, value in (("val", val), ("test", test)):
        if value is not None:
            _, paths, targets = _scan_split(root_path, _split_dir(root_path, split, value), classes)
            splits[split] = (paths, targets)
    recipe = {k: v for k, v in params.items() if k != "root"}
    return _build("image_folder", root_path, splits, classes, params, recipe)


# ----------------------------------------------------------------------------------------------------------------
# file_list


def _read_text(param: str, path: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"{param}: cannot read {path} ({e.strerror})") from None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text") from None


def _parse_list(param: str, path: str) -> tuple[list[str], np.ndarray]:
    """``path label`` lines (the label is the last whitespace-separated field; blank lines are skipped)."""
    paths: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(_read_text(param, path), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DatasetError(f"{path}:{number}: expected '<relative/path> <integer label>', got {line[:200]!r}")
        rel, label = parts
        try:
            value = int(label)
        except ValueError:
            raise DatasetError(f"{path}:{number}: label {label[:50]!r} is not an integer") from None
        if value < 0 or value >= MAX_CLASSES:
            raise DatasetError(f"{path}:{number}: label {value} is out of range [0, {MAX_CLASSES})")
        norm = os.path.normpath(rel)
        if os.path.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep):
            raise DatasetError(f"{path}:{number}: image path {rel[:200]!r} leaves the root folder")
        paths.append(norm)
        labels.append(value)
    if not paths:
        raise DatasetError(f"{path}: no entries")
    return paths, np.asarray(labels, dtype=np.int64)


@register_dataset(
    "file_list",
    description="your images listed in text files of 'relative/path label' lines (ImageNet-LT, Places-LT, iNat)",
    path_params=("root", "train", "val", "test", "class_names"),
)
def load_file_list(
    *,
    root: str | None = None,
    train: str | None = None,
    val: str | None = None,
    test: str | None = None,
    class_names: str | None = None,
    image_size: int = 224,
    augment: bool = True,
    imbalance_factor: float | None = None,
    profile: str = "exp",
    seed: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> LTData:
    """Images listed in text files, one ``relative/path label`` per line, paths relative to ``root``.

    Args:
        root: The folder the listed paths are relative to.
        train: The training list file.
        val: The validation list file, or None (the validation protocol then splits the test set).
        test: The test list file.
        class_names: A text file with one class name per line (line ``i`` names class ``i``); None names the
            classes ``"0" .. "K-1"`` with ``K`` = the largest label in any list + 1.
        image_size: Side of the square crop the model sees.
        augment: Random resized crop + flip on the training split (else the eval resize + center crop).
        imbalance_factor: None keeps the training split as is; otherwise it is subsampled long-tailed.
        profile: ``"exp"`` or ``"step"``.
        seed: Seed of the subsampling.
        mean: Normalisation mean per RGB channel (ImageNet's by default).
        std: Normalisation std per RGB channel.

    Raises:
        DatasetError: naming the file and line at fault (unparsable line, label out of range, path outside root).
    """
    root_path = resolve_path("root", root)
    if not os.path.isdir(root_path):
        raise DatasetError(f"root: {root_path} is not a folder")
    files = {"train": resolve_path("train", train), "test": resolve_path("test", test)}
    if val is not None:
        files["val"] = resolve_path("val", val)
    if class_names is not None:
        files["class_names"] = resolve_path("class_names", class_names)
    params: dict[str, Any] = {
        "root": root_path,
        "train": files["train"],
        "val": files.get("val"),
        "test": files["test"],
        "class_names": files.get("class_names"),
        **_image_params(image_size, augment, imbalance_factor, profile, seed, mean, std),
    }
    splits: dict[str, Any] = {s: _parse_list(s, files[s]) for s in ("train", "val", "test") if s in files}
    if class_names is not None:
        names = [n.strip() for n in _read_text("class_names", files["class_names"])]
        while names and not names[-1]:
            names.pop()
        if not names:
            raise DatasetError(f"{files['class_names']}: no class names")
        for split, (_, labels) in splits.items():
            bad = np.nonzero(labels >= len(names))[0]
            if bad.size:
                line = _line_of_entry(files[split], int(bad[0]))
                raise DatasetError(
                    f"{files[split]}:{line}: label {int(labels[bad[0]])} is out of range: "
                    f"{files['class_names']} names {len(names)} classes"
                )
    else:
        k = max(int(labels.max()) for _, labels in splits.values()) + 1
        names = [str(c) for c in range(k)]
    recipe = {
        **{k: v for k, v in params.items() if k not in files and k != "root"},
        "files": {s: file_digest([p]) for s, p in files.items()},
    }
    return _build("file_list", root_path, splits, names, params, recipe)


def _line_of_entry(path: str, entry: int) -> int:
    """The 1-based line number of the ``entry``-th non-blank line of ``path``."""
    seen = -1
    for number, line in enumerate(_read_text("list", path), start=1):
        if line.strip():
            seen += 1
            if seen == entry:
                return number
    return 0
