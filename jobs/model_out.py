"""A job's models on disk: where its trials' checkpoints are, and model files / exported programs built from them.

Layout under the storage path (no Ray needed to read it):

- ``<storage>/<job_id>/``: the driver's spool and ``result.json``;
- ``<storage>/tune-<job_id>/trial_<trial_id>/checkpoint_NNNNNN/checkpoint.pt``: in-process (one-worker) trials;
- ``<storage>/tune-<job_id>-trial_<trial_id>/checkpoint_NNNNNN/checkpoint.pt``: DDP trials (their TorchTrainer run).

A training checkpoint (``lt_core.engine.save_checkpoint``) carries the model's manifest in ``extra["manifest"]``
(``jobs.train.run_trial``). It is read with ``weights_only=False`` (it holds NumPy RNG state): only the service's
own checkpoints are read so; a downloaded model file is weights and JSON only (``lt_core.inference.save_model``).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from jobs.results import KEEP_CHOICES, keep_checkpoints_setting  # noqa: F401 (re-exported)
from jobs.train import CHECKPOINT_FILE

EXPORTED_PROGRAM = "model.pt2"
EXPORTED_MANIFEST = "manifest.json"


def experiment_name(job_id: str) -> str:
    """The Tune experiment folder of a service job."""
    return f"tune-{job_id}"


def job_artifacts(storage: str | Path, job_id: str) -> list[Path]:
    """Every folder under ``storage`` that belongs to the job (spool, Tune experiment, DDP trial runs)."""
    root = Path(storage)
    name = experiment_name(job_id)
    found = [root / job_id, root / name, *root.glob(f"{name}-trial_*")]
    return [p for p in found if p.exists()]


def remove_job_artifacts(storage: str | Path, job_id: str) -> list[Path]:
    """Delete the job's folders under ``storage``; returns what was removed."""
    removed = job_artifacts(storage, job_id)
    for path in removed:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed


def trial_checkpoint_files(storage: str | Path, job_id: str, trial_id: str) -> list[Path]:
    """The trial's kept checkpoint files (Ray keeps the selected epoch's and the latest), oldest first."""
    root = Path(storage)
    name = experiment_name(job_id)
    folders = [root / name / f"trial_{trial_id}", root / f"{name}-trial_{trial_id}"]
    files = [f for d in folders if d.is_dir() for f in d.glob(f"checkpoint_*/{CHECKPOINT_FILE}")]
    return sorted(files, key=lambda f: f.parent.name)


def prune_checkpoints(storage: str | Path, job_id: str, result: dict[str, Any], keep: str) -> list[Path]:
    """After a job finished, remove the checkpoints its retention setting does not keep; returns the removed folders.

    While a job runs, Ray keeps per trial the best checkpoint by the selection metric and the latest (a retry resumes
    from the latest). Once the job is done, ``selected`` keeps only each trial's selected epoch, ``selected+last``
    also its last epoch, ``all`` everything. A trial without a selected epoch keeps its checkpoints.
    """
    keep = keep_checkpoints_setting(keep)
    removed: list[Path] = []
    if keep == "all":
        return removed
    for trial in result.get("trials") or []:
        selected = (trial.get("selected") or {}).get("epoch")
        if selected is None:
            continue
        files = trial_checkpoint_files(storage, job_id, str(trial["trial_id"]))
        epochs = {f: int(read_checkpoint(f).get("epoch", -1)) for f in files}
        wanted = {int(selected)}
        if keep == "selected+last" and epochs:
            wanted.add(max(epochs.values()))
        for f, epoch in epochs.items():
            if epoch not in wanted:
                shutil.rmtree(f.parent)
                removed.append(f.parent)
    return removed


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint written by this service (trusted: see the module docstring)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_at_epoch(storage: str | Path, job_id: str, trial_id: str, epoch: int) -> dict[str, Any] | None:
    """The trial's checkpoint of ``epoch`` (state with ``model`` and ``extra.manifest``), or None if not kept."""
    for f in reversed(trial_checkpoint_files(storage, job_id, trial_id)):
        state = read_checkpoint(f)
        if int(state.get("epoch", -1)) == int(epoch) and (state.get("extra") or {}).get("manifest"):
            return state
    return None


def model_manifest(state: dict[str, Any], **identity: Any) -> dict[str, Any]:
    """The checkpoint's manifest with the job and trial it came from."""
    return {**state["extra"]["manifest"], **identity}


def model_file_bytes(state: dict[str, Any], manifest: dict[str, Any]) -> bytes:
    """A model file (``lt_core.inference.save_model``) of the checkpoint's weights, as bytes."""
    from lt_core.inference import MODEL_FORMAT

    buffer = io.BytesIO()
    torch.save({"format": MODEL_FORMAT, "model": state["model"], "manifest": manifest}, buffer)
    return buffer.getvalue()


def exported_zip_bytes(state: dict[str, Any], manifest: dict[str, Any]) -> bytes:
    """A zip of ``model.pt2`` (a ``torch.export`` program of the raw logits) and ``manifest.json``."""
    from lt_core.inference import export_program, model_from_manifest

    model = model_from_manifest(manifest)
    model.load_state_dict(state["model"])
    with tempfile.TemporaryDirectory() as tmp:
        program = export_program(model, manifest, Path(tmp) / EXPORTED_PROGRAM)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(program, EXPORTED_PROGRAM)
            z.writestr(EXPORTED_MANIFEST, json.dumps(manifest, indent=1, allow_nan=False, default=str))
        return buffer.getvalue()
