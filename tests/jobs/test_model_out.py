"""A trial's checkpoints carry a manifest; the model file built from one reproduces the trial's reported metrics."""

from __future__ import annotations

import io
import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.model_out import (
    EXPORTED_MANIFEST,
    EXPORTED_PROGRAM,
    checkpoint_at_epoch,
    exported_zip_bytes,
    job_artifacts,
    model_file_bytes,
    model_manifest,
    remove_job_artifacts,
)
from jobs.plan import plan_trials
from jobs.results import METRICS_JSON, finish_trial
from jobs.spec import JobSpec
from jobs.train import TrialContext, run_trial, trial_data
from lt_core import load_model, predict
from lt_core.inference import InputError, predict_logits
from lt_core.metrics import EvalAccumulator

DIGITS = {"name": "digits_lt", "imbalance_factor": 20, "profile": "exp", "test_per_class": 50, "seed": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One control trial run like the service runs it, its checkpoints laid out as Tune lays them out."""
    spec = JobSpec.model_validate(
        {
            "name": "model-out",
            "dataset": DIGITS,
            "model": {"name": "mlp", "hidden_sizes": [32]},
            "losses": [{"name": "logit_adjusted"}],
            "train": {"epochs": 4, "batch_size": 64, "lr": 0.1},
            "scaling": {"num_workers": 1, "cpus_per_worker": 0.99},
            "tune": {"num_samples": 1},
        }
    )
    trial = plan_trials(spec)[0]
    storage = tmp_path_factory.mktemp("storage")
    folder = storage / "tune-job_x" / "trial_t1"
    reports = []

    def report(metrics, checkpoint_dir):
        epoch = json.loads(metrics[METRICS_JSON])["epoch"]
        reports.append(json.loads(metrics[METRICS_JSON]))
        if checkpoint_dir:
            shutil.copytree(checkpoint_dir, folder / f"checkpoint_{epoch:06d}")

    ctx = TrialContext(report=report, checkpoint_metric=spec.selection_metric, checkpoint_mode="max")
    history = run_trial(trial, DIGITS, ctx)
    t = {"history": history}
    finish_trial(t, spec.tune.metric, "max", spec.selection_metric)
    return {"storage": storage, "trial": trial, "t": t, "reports": reports, "spec": spec}


def _model(trained, tmp_path):
    epoch = trained["t"]["selected"]["epoch"]
    state = checkpoint_at_epoch(trained["storage"], "job_x", "t1", epoch)
    assert state is not None, f"the selected epoch {epoch} has a checkpoint"
    path = tmp_path / "model.pt"
    path.write_bytes(model_file_bytes(state, model_manifest(state, job_id="job_x", trial_id="t1")))
    return path, state


def test_downloaded_model_reproduces_the_reported_metrics(trained, tmp_path):
    path, _ = _model(trained, tmp_path)
    model, manifest = load_model(path)
    t = trained["t"]
    epoch = t["selected"]["epoch"]
    assert manifest["epoch"] == epoch and manifest["trial_id"] == "t1"
    assert manifest["num_classes"] == 10 and manifest["class_names"] == [str(c) for c in range(10)]
    assert manifest["input"] == {"shape": [64], "dtype": "float32", "preprocessing": {"kind": "none"}}
    assert manifest["loss"]["name"] == "ce" and manifest["dataset"]["fingerprint"]
    assert manifest["metrics"]["test"]["balanced_accuracy"] == t["selected"]["test"]["balanced_accuracy"]
    data = trial_data(DIGITS, trained["trial"].evaluation)
    assert manifest["class_counts"] == data.class_counts.tolist()
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    y = data.test_targets
    for posthoc, reported in (
        ("none", t["selected"]["test"]["balanced_accuracy"]),
        ("auto", t["posthoc"]["test"]["balanced_accuracy"]),
        (
            {"tau": manifest["posthoc"]["tau"], "method": manifest["posthoc"]["method"]},
            t["posthoc"]["test"]["balanced_accuracy"],
        ),
    ):
        acc = EvalAccumulator(10)
        acc.update(predict_logits(model, manifest, x, posthoc=posthoc), y)
        assert abs(acc.compute(manifest["class_counts"])["balanced_accuracy"] - reported) <= 1e-6, posthoc
    assert manifest["posthoc"]["tau"] == t["posthoc"]["tau"] and manifest["posthoc"]["chosen_on"] == "val"
    probs = predict(model, manifest, x[:5].numpy())
    assert probs.shape == (5, 10) and torch.allclose(probs.sum(1), torch.ones(5))
    with pytest.raises(InputError, match=r"\(N, 64\)"):
        predict(model, manifest, np.zeros((2, 63)))


def test_selected_and_last_epochs_are_kept(trained):
    epochs = {int(p.name.split("_")[1]) for p in (trained["storage"] / "tune-job_x" / "trial_t1").iterdir()}
    assert trained["t"]["selected"]["epoch"] in epochs and 4 in epochs


def test_exported_program_gives_the_loaded_models_logits(trained, tmp_path):
    path, state = _model(trained, tmp_path)
    model, manifest = load_model(path)
    blob = exported_zip_bytes(state, manifest)
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        assert json.loads(z.read(EXPORTED_MANIFEST))["epoch"] == manifest["epoch"]
        (tmp_path / EXPORTED_PROGRAM).write_bytes(z.read(EXPORTED_PROGRAM))
    program = torch.export.load(str(tmp_path / EXPORTED_PROGRAM)).module()
    x = torch.rand(7, 64)
    assert torch.allclose(program(x), predict_logits(model, manifest, x, posthoc="none"), atol=1e-6)
    assert program(torch.rand(1, 64)).shape == (1, 10)


def test_job_artifacts_are_found_and_removed(tmp_path):
    for rel in ("job_a/events.jsonl", "tune-job_a/trial_1/x", "tune-job_a-trial_2/checkpoint_000001/x", "job_b/x"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert {p.name for p in job_artifacts(tmp_path, "job_a")} == {"job_a", "tune-job_a", "tune-job_a-trial_2"}
    remove_job_artifacts(tmp_path, "job_a")
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["job_b"]


def _row(epoch, val, test, ph_val, ph_test, tau):
    return {
        "epoch": epoch,
        "val_balanced_accuracy": val,
        "balanced_accuracy": test,
        "posthoc_method": "logit_adjustment",
        "posthoc_tau": tau,
        "posthoc_chosen_on": "val",
        "posthoc_balanced_accuracy": ph_test,
        "val_posthoc_balanced_accuracy": ph_val,
        "posthoc_la_tau": tau,
        "posthoc_la_balanced_accuracy": ph_test,
        "val_posthoc_la_balanced_accuracy": ph_val,
    }


def test_results_carry_the_posthoc_block_and_the_control_row():
    from jobs.results import summarize

    def trial(tid, control, seed, rows):
        return {
            "trial_id": tid,
            "branch": "control" if control else "la",
            "branch_index": None if control else 0,
            "is_control": control,
            "config": {},
            "config_id": "c" if control else "b",
            "seed": seed,
            "history": rows,
        }

    trials = [
        trial("c0", True, 0, [_row(1, 0.5, 0.50, 0.6, 0.62, 1.0), _row(2, 0.4, 0.45, 0.7, 0.7, 1.25)]),
        trial("c1", True, 1, [_row(1, 0.5, 0.54, 0.6, 0.60, 0.75)]),
        trial("b0", False, 0, [_row(1, 0.6, 0.60, 0.6, 0.60, 0.0)]),
        trial("b1", False, 1, [_row(1, 0.6, 0.64, 0.6, 0.66, 0.25)]),
    ]
    out = summarize(
        trials, "max", [("la", "logit_adjusted")], metric="balanced_accuracy", selection_metric="val_balanced_accuracy"
    )
    c0 = trials[0]
    assert c0["selected"]["epoch"] == 1  # selected by raw validation, the post-hoc block taken at that epoch
    assert c0["posthoc"]["tau"] == 1.0 and c0["posthoc"]["test"]["balanced_accuracy"] == 0.62
    assert c0["posthoc"]["val"]["balanced_accuracy"] == 0.6 and c0["posthoc"]["la"]["tau"] == 1.0
    control = out["control_posthoc"]
    assert control["test_mean"] == pytest.approx(0.61) and control["raw_test_mean"] == pytest.approx(0.52)
    assert control["gain_vs_raw"] == pytest.approx(0.09) and control["taus"] == [1.0, 0.75]
    branch = out["branches"][0]["posthoc"]
    assert branch["test_mean"] == pytest.approx(0.63) and branch["gain_vs_raw"] == pytest.approx(0.01)
    assert branch["gain"] == pytest.approx(0.63 - 0.52)  # vs the raw control, seed by seed


@pytest.mark.parametrize("keep", ["selected", "selected+last", "all"])
def test_retention_after_the_job_keeps_what_the_setting_says(trained, tmp_path, keep):
    from jobs.model_out import keep_checkpoints_setting, prune_checkpoints

    storage = tmp_path / "storage"
    shutil.copytree(trained["storage"], storage)
    folder = storage / "tune-job_x" / "trial_t1"
    before = {p.name for p in folder.iterdir()}
    selected = trained["t"]["selected"]["epoch"]
    result = {"trials": [{"trial_id": "t1", "selected": {"epoch": selected}}]}
    prune_checkpoints(storage, "job_x", result, keep)
    after = {int(p.name.split("_")[1]) for p in folder.iterdir()}
    expected = {"selected": {selected}, "selected+last": {selected, 4}, "all": {int(n.split("_")[1]) for n in before}}
    assert after == expected[keep]
    assert checkpoint_at_epoch(storage, "job_x", "t1", selected) is not None
    with pytest.raises(ValueError, match="selected\\+last"):
        keep_checkpoints_setting("best")


def test_checkpoint_score_breaks_ties_towards_the_earlier_epoch_as_selection_does():
    from jobs.train import checkpoint_score

    early, late = {"epoch": 3, "m": 0.8}, {"epoch": 9, "m": 0.8}
    assert checkpoint_score(early, "m", "max") > checkpoint_score(late, "m", "max")
    assert checkpoint_score(early, "m", "min") < checkpoint_score(late, "m", "min")
    assert checkpoint_score({"epoch": 9, "m": 0.8 + 1e-6}, "m", "max") > checkpoint_score(early, "m", "max")
    assert math.isnan(checkpoint_score({"epoch": 1}, "m")) and math.isnan(checkpoint_score(early, None))


@pytest.mark.parametrize(
    "lifts, significant",
    [([0.10, 0.11, 0.09], True), ([0.10, -0.10, 0.02], False), ([0.10], False)],
)
def test_control_posthoc_says_whether_its_gain_is_significant_by_the_branches_rule(lifts, significant):
    from scipy import stats

    from jobs.results import JobResult, summarize

    trials = [
        {
            "trial_id": f"c{seed}",
            "branch": "control",
            "branch_index": None,
            "is_control": True,
            "config": {},
            "config_id": "c",
            "seed": seed,
            "history": [_row(1, 0.5, 0.5 + 0.01 * seed, 0.6, 0.5 + 0.01 * seed + lift, 1.0)],
        }
        for seed, lift in enumerate(lifts)
    ]
    out = summarize(trials, "max", [], metric="balanced_accuracy", selection_metric="val_balanced_accuracy")
    control = out["control_posthoc"]
    assert control["gain"] == pytest.approx(np.mean(lifts)) and control["n_pairs"] == len(lifts)
    if len(lifts) > 1:
        lo, hi = stats.t.interval(0.95, len(lifts) - 1, loc=np.mean(lifts), scale=stats.sem(lifts))
        assert control["gain_ci95"] == (pytest.approx(lo), pytest.approx(hi))
        assert bool(lo > 0 or hi < 0) is significant
    assert control["significant"] is significant
    # typed and published: the model carries it, and so does its JSON schema
    result = JobResult.model_validate({"job_name": "j", "metric": "balanced_accuracy", "mode": "max", **out})
    assert result.control_posthoc is not None and result.control_posthoc.significant is significant
    assert "significant" in JobResult.model_json_schema()["$defs"]["PosthocSummary"]["properties"]
