"""A trained model out of the service: its manifest, one-file model files, loading, prediction and export.

A **model file** (``save_model``) is one ``torch.save`` file: ``{"format": MODEL_FORMAT, "model": state dict,
"manifest": JSON-able dict}``; it loads with ``torch.load(weights_only=True)``. The **manifest** (``make_manifest``)
says everything needed to use the weights: the model spec, the classes (names, training counts), the input spec and
preprocessing, the loss, the dataset fingerprint, the epoch with its val and test metrics, and the post-hoc
adjustment chosen on validation (``lt_core.posthoc``), which ``predict(..., posthoc="auto")`` applies.

``export_program`` writes a ``torch.export`` program (``.pt2``) of the raw logits that ``torch.export.load`` runs
without this project.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lt_core.posthoc import METHODS, TAUS, adjust_logits, linear_head, log_prior

__all__ = [
    "MODEL_FORMAT",
    "InputError",
    "export_program",
    "input_spec",
    "load_images",
    "load_model",
    "make_manifest",
    "model_from_manifest",
    "predict",
    "prepare_inputs",
    "read_inputs",
    "save_model",
]

MODEL_FORMAT = "longtail-model/1"
MAX_IMAGE_PIXELS = 4096 * 4096  # larger images are refused before they are decoded
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class InputError(ValueError):
    """Inputs that do not match the model's input spec; the message names the expected shape."""


def input_spec(data: Any) -> dict[str, Any]:
    """The input spec of an ``LTData``: shape, dtype and the preprocessing its items went through.

    - A dataset that states its preprocessing (an ``LTData.preprocessing`` dict, e.g. ``{"kind": "image", "size":
      [H, W], "channels": C, "scale": 1/255, "mean": [...], "std": [...]}``) keeps it: image files are then read,
      resized, scaled and normalised that way (``load_images``).
    - A 3-d input whose test split normalises with ``mean``/``std`` (``lt_core.datasets.cifar``) is such an image
      dataset (uint8 pixels scaled by 1/255, then normalised).
    - Any other dataset's rows are model-ready: ``{"kind": "none"}`` (inputs are given as rows).
    """
    shape = [int(s) for s in data.input_shape]
    preprocessing: dict[str, Any] = {"kind": "none"}
    stated = getattr(data, "preprocessing", None)
    dataset = data.test
    while hasattr(dataset, "dataset"):  # Subset wrappers
        dataset = dataset.dataset
    transform = getattr(dataset, "transform", None)
    if isinstance(stated, dict):
        preprocessing = dict(stated)
    elif (
        len(shape) == 3 and getattr(transform, "mean", None) is not None and getattr(transform, "std", None) is not None
    ):
        preprocessing = {"kind": "image", "size": shape[1:], "channels": shape[0], "scale": 1 / 255}
        for name in ("mean", "std"):
            preprocessing[name] = [float(v) for v in torch.as_tensor(getattr(transform, name)).reshape(-1)]
    return {"shape": shape, "dtype": "float32", "preprocessing": _jsonable(preprocessing)}


def make_manifest(
    *,
    cfg: Any,
    data: Any,
    metrics: dict[str, Any],
    class_counts: Sequence[int] | Tensor,
) -> dict[str, Any]:
    """The manifest of a model at the epoch whose full ``metrics`` (``lt_core.engine.run_epoch``) are given.

    Args:
        cfg: The run's ``FitConfig``.
        data: The run's ``LTData``.
        metrics: The epoch's metrics (``epoch``, test metrics, ``val_*``, ``posthoc``).
        class_counts: The training class counts (the prior of logit adjustment).
    """
    scalars = {k: v for k, v in metrics.items() if v is None or isinstance(v, (int, float))}
    val = {k[4:]: v for k, v in scalars.items() if k.startswith("val_") and not k.startswith("val_posthoc")}
    test = {k: v for k, v in scalars.items() if not k.startswith(("val_", "posthoc", "reported_at"))}
    ph = metrics.get("posthoc") or {}
    chosen = ph.get("chosen") or {"method": "logit_adjustment", "tau": 0.0, "chosen_on": "none"}
    return {
        "format": MODEL_FORMAT,
        "model": {"name": cfg.model, "params": dict(cfg.model_params)},
        "num_classes": int(data.num_classes),
        "class_names": [str(c) for c in data.class_names],
        "class_counts": [int(c) for c in torch.as_tensor(class_counts).tolist()],
        "input": input_spec(data),
        "loss": {"name": cfg.loss, "params": dict(cfg.loss_params), "reweighting": cfg.reweighting},
        "train": cfg.to_dict(),
        "dataset": {"name": data.name, "params": _jsonable(data.params), "fingerprint": data.fingerprint},
        "epoch": int(metrics["epoch"]),
        "metrics": {"val": val or None, "test": test},
        "posthoc": {
            "method": chosen["method"],
            "tau": float(chosen["tau"]),
            "chosen_on": chosen.get("chosen_on"),
            "metric": ph.get("metric"),
            "taus": list(ph.get("taus") or TAUS),
            "chosen_la": ph.get("chosen_la"),
            "val": _posthoc_row(ph.get("val"), chosen),
            "test": _posthoc_row(ph.get("test"), chosen),
        },
    }


def _posthoc_row(grid: dict[str, list[dict[str, Any]]] | None, chosen: dict[str, Any]) -> dict[str, Any] | None:
    if not grid or chosen["method"] not in grid:
        return None
    return grid[chosen["method"]][list(TAUS).index(float(chosen["tau"]))]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def save_model(path: str | os.PathLike[str], state_dict: dict[str, Tensor], manifest: dict[str, Any]) -> Path:
    """Write a model file (weights + manifest), atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": MODEL_FORMAT, "model": state_dict, "manifest": manifest}, tmp)
    os.replace(tmp, path)
    return path


def model_from_manifest(manifest: dict[str, Any]) -> nn.Module:
    """An untrained model of the manifest's architecture."""
    from lt_core.models import create_model

    spec = manifest["model"]
    return create_model(spec["name"], manifest["num_classes"], tuple(manifest["input"]["shape"]), **spec["params"])


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model file: ``(model in eval mode on the CPU, manifest)``.

    Raises:
        ValueError: when the file is not a model file of this format.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors of a file that is not a model file
        raise ValueError(f"{path}: not a model file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a model file (format {MODEL_FORMAT!r} expected)")
    manifest = state["manifest"]
    model = model_from_manifest(manifest)
    model.load_state_dict(state["model"])
    return model.eval(), manifest


def load_images(images: Sequence[str | os.PathLike[str] | bytes], manifest: dict[str, Any]) -> Tensor:
    """Images preprocessed as the manifest's input spec says (resized, scaled, normalised): ``(N, C, H, W)``.

    ``images``: file paths, or the bytes of image files; one larger than ``MAX_IMAGE_PIXELS`` is refused.
    """
    from PIL import Image, UnidentifiedImageError

    pre = manifest["input"]["preprocessing"]
    if pre.get("kind") != "image":
        raise InputError(f"this model takes rows of shape {manifest['input']['shape']}, not image files")
    h, w = pre["size"]
    channels = int(pre.get("channels", 3))
    out = []
    for i, p in enumerate(images):
        label = f"image {i}" if isinstance(p, bytes) else str(p)
        try:
            with Image.open(io.BytesIO(p) if isinstance(p, bytes) else p) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise InputError(f"{label}: {im.width}x{im.height} pixels is more than {MAX_IMAGE_PIXELS}")
                im = im.convert("RGB" if channels == 3 else "L").resize((w, h))
                arr = np.asarray(im, dtype=np.float32)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise InputError(f"{label}: not a readable image ({e})") from None
        x = torch.from_numpy(arr.reshape(h, w, channels).copy()).permute(2, 0, 1) * float(pre.get("scale", 1 / 255))
        if "mean" in pre and "std" in pre:
            x = (x - torch.tensor(pre["mean"]).view(-1, 1, 1)) / torch.tensor(pre["std"]).view(-1, 1, 1)
        out.append(x)
    return torch.stack(out) if out else torch.zeros(0, channels, h, w)


def read_inputs(path: str | os.PathLike[str], manifest: dict[str, Any]) -> tuple[list[str], Any]:
    """``(names, inputs)`` of an input file or folder, for ``predict``.

    - ``.npz``: the array ``x`` (or the only array), one row per input; names are row numbers.
    - ``.csv``: numeric rows (a non-numeric first line is a header and skipped).
    - ``.parquet``: every column numeric (needs pandas with a parquet engine).
    - an image file, or a folder of them (sorted; for image models): names are the file names.

    Raises:
        InputError: a missing file, an unknown suffix, or images for a model that takes rows.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
        if not files:
            raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        if manifest["input"]["preprocessing"].get("kind") != "image":
            raise InputError(
                f"{path}: this model takes rows of shape {manifest['input']['shape']} (.npz, .csv or .parquet), "
                "not image files"
            )
        return [p.name for p in files], [str(p) for p in files]
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if "x" not in keys and len(keys) != 1:
                raise InputError(f"{path}: expected an array named 'x' (or a single array), found {keys}")
            rows = np.asarray(z["x" if "x" in keys else keys[0]], dtype=np.float32)
    elif suffix == ".csv":
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        try:
            float(lines[0].split(",")[0]) if lines else None
        except ValueError:
            lines = lines[1:]  # a header
        try:
            rows = np.array([[float(v) for v in ln.split(",")] for ln in lines], dtype=np.float32)
        except ValueError as e:
            raise InputError(f"{path}: rows must be numbers separated by commas ({e})") from None
    elif suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path).to_numpy(dtype=np.float32)
    else:
        raise InputError(f"{path}: unknown input type {suffix!r}; use .npz, .csv, .parquet, an image or a folder")
    return [str(i) for i in range(len(rows))], rows


def prepare_inputs(inputs: Any, manifest: dict[str, Any]) -> Tensor:
    """``inputs`` as a float32 ``(N, *shape)`` tensor.

    ``inputs``: a tensor or array of ``(N, *shape)`` or flat ``(N, prod(shape))`` rows, or image paths (image models).

    Raises:
        InputError: naming the expected shape.
    """
    shape = tuple(manifest["input"]["shape"])
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], (str, os.PathLike, bytes)):
        return load_images(inputs, manifest)
    try:
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32) if not isinstance(inputs, Tensor) else inputs)
    except (TypeError, ValueError) as e:
        raise InputError(f"inputs must be numeric rows of shape (N, {', '.join(map(str, shape))}): {e}") from None
    x = x.float()
    flat = int(np.prod(shape))
    if tuple(x.shape[1:]) == shape and x.ndim == len(shape) + 1:
        return x
    if x.ndim == 2 and x.shape[1] == flat:
        return x.reshape(-1, *shape)
    expected = f"(N, {', '.join(map(str, shape))})" + (f" or (N, {flat})" if len(shape) > 1 else "")
    raise InputError(f"inputs must have shape {expected}; got {tuple(x.shape)}")


def _posthoc_setting(manifest: dict[str, Any], posthoc: str | dict[str, Any]) -> tuple[str, float]:
    if posthoc == "none":
        return "logit_adjustment", 0.0
    if posthoc == "auto":
        ph = manifest.get("posthoc") or {}
        return ph.get("method", "logit_adjustment"), float(ph.get("tau", 0.0))
    if isinstance(posthoc, dict) and "tau" in posthoc:
        method = posthoc.get("method", "logit_adjustment")
        if method not in METHODS:
            raise ValueError(f"posthoc method must be one of {list(METHODS)}, got {method!r}")
        tau = float(posthoc["tau"])
        if not 0 <= tau <= 10:
            raise ValueError(f"posthoc tau must be in [0, 10], got {tau}")
        return method, tau
    raise ValueError(f'posthoc must be "auto", "none" or {{"tau": t}}, got {posthoc!r}')


@torch.no_grad()
def predict_logits(
    model: nn.Module, manifest: dict[str, Any], inputs: Any, *, posthoc: str | dict[str, Any] = "auto"
) -> Tensor:
    """The (post-hoc adjusted) logits of ``inputs``, ``(N, K)`` float32 on the CPU; see ``predict``."""
    method, tau = _posthoc_setting(manifest, posthoc)
    x = prepare_inputs(inputs, manifest)
    model.eval()
    device = next(model.parameters()).device
    logits, features = model(x.to(device))
    logits = logits.float()
    head = linear_head(model) if method == "tau_norm" else None
    if method == "tau_norm" and head is None and tau != 0:
        raise ValueError("tau_norm needs a model with a linear (nn.Linear) classifier")
    z = adjust_logits(logits, method, tau, prior=log_prior(manifest["class_counts"]), features=features, head=head)
    return z.cpu()


def predict(
    model: nn.Module, manifest: dict[str, Any], inputs: Any, *, posthoc: str | dict[str, Any] = "auto"
) -> Tensor:
    """Class probabilities ``(N, K)`` of ``inputs`` (a tensor, an array, or image paths for image models).

    Args:
        model: From ``load_model``.
        manifest: Its manifest.
        inputs: Preprocessed as the manifest's input spec says (see ``prepare_inputs``).
        posthoc: ``"auto"``: the adjustment chosen on validation (the manifest's ``posthoc``); ``"none"``: the raw
            model; ``{"tau": t}`` (optionally ``"method"``: ``logit_adjustment`` (default) or ``tau_norm``).

    Raises:
        InputError: wrong input shape (the message names the expected one).
    """
    return predict_logits(model, manifest, inputs, posthoc=posthoc).softmax(dim=1)


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.model(x)[0]
        return logits


def export_program(model: nn.Module, manifest: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a ``torch.export`` program of the raw logits ``(N, K)`` for inputs ``(N, *shape)`` (any ``N``)."""
    shape = tuple(manifest["input"]["shape"])
    example = torch.zeros(2, *shape)
    program = torch.export.export(
        _Logits(model.eval()).eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))
    return Path(path)
