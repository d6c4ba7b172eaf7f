"""Checking a submitted spec: the JobSpec itself, dataset paths against the data root, and the service's limits.

Every problem becomes a ``SpecRejected`` (422) whose details list ``{"loc": "<field path>", "msg": ...}``.
"""

from __future__ import annotations

import math
import stat
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from jobs.spec import JobSpec, Limits
from service.errors import SpecRejected
from service.settings import Settings
from service.spec_errors import validation_details


def parse_spec(body: Any, settings: Settings) -> JobSpec:
    """Validate a request body as a JobSpec, then check it against the deployment's limits."""
    out_of_range = list(_unsafe_numbers(body, ""))
    if out_of_range:
        raise SpecRejected("the job spec is invalid", out_of_range[:20])
    try:
        spec = JobSpec.model_validate(body)
    except ValidationError as exc:
        raise SpecRejected("the job spec is invalid", validation_details(exc, body)) from None
    exceeded = deployment_limits(settings).violations(spec)
    if exceeded:
        raise SpecRejected(
            "the job spec exceeds a limit", [{"loc": e.loc, "msg": e.msg, "type": "limit"} for e in exceeded]
        )
    return spec


def deployment_limits(settings: Settings) -> Limits:
    """The limits this deployment puts on a job (checked once, when it is submitted)."""
    return Limits(
        max_trials=settings.max_trials_per_job,
        max_epochs=settings.max_epochs,
        max_workers_per_trial=settings.max_workers_per_trial,
    )


MAX_SPEC_INT = 2**53  # the largest integer every JSON reader (and a float64) holds exactly


def _unsafe_numbers(value: Any, loc: str) -> Any:
    """Numbers no spec field takes, wherever they are: non-finite floats, integers beyond +-2^53."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > MAX_SPEC_INT:
        yield {"loc": loc or "body", "msg": f"{str(value)[:30]} is out of range (|n| <= 2^53)", "type": "number_range"}
    elif isinstance(value, float) and not math.isfinite(value):
        yield {"loc": loc or "body", "msg": "NaN and infinities are not numbers a spec takes", "type": "finite_number"}
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _unsafe_numbers(item, f"{loc}.{key}" if loc else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _unsafe_numbers(item, f"{loc}[{i}]")


def resolve_dataset_paths(spec: JobSpec, data_root: Path) -> JobSpec:
    """The spec with each path it names (``JobSpec.spec_paths``: dataset files and folders, model weights) replaced
    by its resolved absolute path inside ``data_root``.

    Refused (422 naming the field, e.g. ``dataset.root`` or ``model.weights_path``): a path that leaves the root
    (``..``, absolute elsewhere), a symlink whose target leaves it, a path that does not exist, and a folder where
    the field takes a file or the other way round.
    """
    paths = spec.spec_paths()
    if not paths:
        return spec
    root = data_root.resolve()
    resolved: dict[str, str] = {}
    details = []
    for loc, raw, kind in paths:
        want_dir = kind == "dir"
        problem = _path_problem(raw)
        if problem:
            details.append({"loc": loc, "msg": problem, "type": "path_invalid"})
            continue
        candidate = Path(raw)
        joined = candidate if candidate.is_absolute() else root / candidate
        # Lexical check first (before touching the filesystem), then the real path with symlinks resolved.
        lexical = Path(_normpath(joined))
        if not _inside(lexical, root):
            details.append({"loc": loc, "msg": f"{raw!r} is outside the data root", "type": "path_outside_root"})
            continue
        real = joined.resolve()
        if not _inside(real, root):
            details.append(
                {"loc": loc, "msg": f"{raw!r} is a symlink leading outside the data root", "type": "path_outside_root"}
            )
            continue
        try:
            mode = real.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            details.append({"loc": loc, "msg": f"{raw!r} does not exist under the data root", "type": "path_missing"})
            continue
        except OSError as exc:
            details.append({"loc": loc, "msg": f"{raw!r} cannot be read: {exc.strerror}", "type": "path_invalid"})
            continue
        if want_dir and not stat.S_ISDIR(mode):
            details.append({"loc": loc, "msg": f"{raw!r} is not a directory", "type": "path_not_directory"})
            continue
        if not want_dir and not stat.S_ISREG(mode):
            details.append({"loc": loc, "msg": f"{raw!r} is not a regular file", "type": "path_not_file"})
            continue
        resolved[loc] = str(real)
    if details:
        raise SpecRejected("a dataset path is not usable", details)
    return spec.with_paths(resolved)


MAX_PATH_CHARS = 1024
MAX_COMPONENT_CHARS = 255


def _path_problem(raw: str) -> str | None:
    """Why ``raw`` can never be a dataset path (checked before the filesystem is touched), or None."""
    if not raw.strip():
        return "an empty path"
    if "\x00" in raw:
        return "a path with a NUL byte"
    if len(raw) > MAX_PATH_CHARS:
        return f"a path longer than {MAX_PATH_CHARS} characters"
    if any(len(part.encode()) > MAX_COMPONENT_CHARS for part in raw.split("/")):
        return f"a path component longer than {MAX_COMPONENT_CHARS} bytes"
    if any(ord(c) < 32 for c in raw):
        return "a path with a control character"
    return None


def _normpath(path: Path) -> str:
    import os.path

    return os.path.normpath(str(path))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def val_split_details(spec: JobSpec) -> list[dict[str, str]]:
    """Why the validation split of ``spec`` (a resolved spec) cannot be made, for an npz whose labels say so.

    ``JobSpec`` checks the datasets whose test size is in the spec; an npz is checked here by reading its test labels
    only (an npz member is read on its own). Other files are checked when the data is loaded: the trial fails with a
    message naming ``val_fraction``, and the search stops.
    """
    if spec.evaluation.selection != "val" or spec.dataset.name != "npz":
        return []
    import numpy as np

    fraction = spec.evaluation.val_fraction
    try:
        with np.load(spec.dataset.path, allow_pickle=False) as arrays:
            if "x_val" in arrays.files or "y_test" not in arrays.files:
                return []  # its own validation split, or a file the loader will refuse with its own message
            labels = np.asarray(arrays["y_test"])
    except (OSError, ValueError, EOFError):
        return []  # not a readable npz: the loader says why
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.size == 0 or labels.min() < 0:
        return []
    counts = np.bincount(labels)
    short = [c for c, n in enumerate(counts.tolist()) if n and not 1 <= round(fraction * n) <= n - 1]
    if not short:
        return []
    few = ", ".join(f"class {c} ({int(counts[c])} test item(s))" for c in short[:5])
    more = f" and {len(short) - 5} more" if len(short) > 5 else ""
    return [
        {
            "loc": "evaluation.val_fraction",
            "msg": f"{fraction:g} of the test split leaves no validation or no test item for {few}{more}: every class "
            "needs one on each side (add x_val/y_val to the file, change val_fraction, or use selection 'test')",
            "type": "val_split",
        }
    ]


def feasibility_details(spec: JobSpec, nodes: list[dict[str, float]]) -> list[dict[str, str]]:
    """Why a trial of ``spec`` can never run on a cluster whose alive nodes have ``nodes`` total resources.

    Every DDP worker must fit on one node, and the cluster must be able to hold all workers of a trial (plus the
    trial's small driver) at once. An empty ``nodes`` means "unknown": nothing is refused.
    """
    if not nodes:
        return []
    worker = spec.worker_resources()
    need_cpu, need_gpu = worker["CPU"], worker.get("GPU", 0.0)
    max_cpu = max(n.get("CPU", 0.0) for n in nodes)
    max_gpu = max(n.get("GPU", 0.0) for n in nodes)
    fits = [n for n in nodes if n.get("CPU", 0.0) >= need_cpu and n.get("GPU", 0.0) >= need_gpu]
    if not fits:
        loc = "scaling.gpus_per_worker" if need_gpu > max_gpu else "scaling.cpus_per_worker"
        return [
            {
                "loc": loc,
                "msg": f"a worker needs {need_cpu:g} CPU and {need_gpu:g} GPU, but the largest node of the cluster has "
                f"{max_cpu:g} CPU and {max_gpu:g} GPU",
                "type": "infeasible",
            }
        ]
    placeable = 0
    for n in fits:
        # workers per node, by each resource a worker needs (a worker needs CPUs: cpus_per_worker > 0)
        by_resource = [int(n.get(k, 0.0) // v) for k, v in (("CPU", need_cpu), ("GPU", need_gpu)) if v > 0]
        placeable += min(by_resource)
    if placeable < spec.scaling.num_workers:
        return [
            {
                "loc": "scaling.num_workers",
                "msg": f"a trial needs {spec.scaling.num_workers} workers of {need_cpu:g} CPU / {need_gpu:g} GPU, "
                f"but the cluster can place at most {placeable}",
                "type": "infeasible",
            }
        ]
    total_cpu = sum(n.get("CPU", 0.0) for n in nodes)
    trial_cpu = spec.trial_resources()["CPU"]
    if trial_cpu > total_cpu + 1e-9:
        return [
            {
                "loc": "scaling.cpus_per_worker",
                "msg": f"a trial needs {trial_cpu:g} CPU in all (workers plus its driver), "
                f"the cluster has {total_cpu:g}",
                "type": "infeasible",
            }
        ]
    return []
