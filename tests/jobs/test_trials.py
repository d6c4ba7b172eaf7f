"""Trials as plain PyTorch, as 2-worker Ray Train DDP runs, and small Ray Tune searches (real local Ray)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from jobs.plan import plan_trials
from jobs.results import SELECTION_SCORE
from jobs.spec import JobSpec
from jobs.train import METRICS_JSON, TrialContext, global_class_counts, run_trial
from jobs.tune import run_job

DIGITS = {"name": "digits_lt", "imbalance_factor": 20, "profile": "exp", "test_per_class": 50, "seed": 0}


def tiny_spec(**kw) -> JobSpec:
    data = {
        "name": "tiny",
        "dataset": DIGITS,
        "model": {"name": "mlp", "hidden_sizes": [32]},
        "losses": [{"name": "focal", "gamma": 2.0}, {"name": "logit_adjusted"}],
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.1},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.99},
        "tune": {"num_samples": 1, "max_concurrent_trials": 2},
    }
    return JobSpec.model_validate(data | kw)


def test_run_trial_is_plain_pytorch_without_ray():
    trial = plan_trials(tiny_spec(losses=[{"name": "ib", "start_epoch": 1}]))[1]
    reports = []
    history = run_trial(trial, DIGITS, TrialContext(report=lambda m, ckpt: reports.append((m, ckpt))))
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["loss_phase"] for h in history] == ["ce", "ib"]  # IB's plain-CE warm-up, then IB
    metrics, ckpt = reports[-1]
    full = json.loads(metrics[METRICS_JSON])
    assert ckpt is not None and len(full["per_class_accuracy"]) == 10
    assert metrics["balanced_accuracy"] == full["balanced_accuracy"]
    assert all(math.isfinite(h["train_loss"]) for h in history)
    # Selection on validation (the default): every epoch has val_* metrics of the held-out half of the test split,
    # and Tune's score is the best validation value so far.
    assert all(0 <= h["val_balanced_accuracy"] <= 1 and "val_ece" in h for h in history)
    best_val = max(h["val_balanced_accuracy"] for h in history)
    assert reports[-1][0][SELECTION_SCORE] == best_val
    assert reports[0][0][SELECTION_SCORE] == history[0]["val_balanced_accuracy"]


def _probe_loop(config):
    """A Ray Train worker that records its shard and all-reduced counts, then runs the real trial loop."""
    import ray.train
    import torch.distributed as dist

    from jobs.train import fit_config, train_loop_per_worker
    from lt_core.datasets import load_dataset
    from lt_core.engine import LossSchedule, shard_indices

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = load_dataset("digits_lt", **{k: v for k, v in config["dataset"].items() if k != "name"})
    shard = torch.bincount(data.train_targets[shard_indices(len(data.train_targets), rank, world)], minlength=10)
    counts = global_class_counts(data, rank, world)
    loss, _ = LossSchedule(fit_config(config["trial"]), counts).criterion(0)
    train_loop_per_worker(config)
    return {
        "rank": rank,
        "world": world,
        "dist": dist.is_initialized(),
        "shard": shard.tolist(),
        "counts": counts.tolist(),
        "dataset_counts": data.class_counts.tolist(),
        "log_prior": loss.log_prior.tolist() if hasattr(loss, "log_prior") else None,
        "buffers": {k: v.tolist() for k, v in loss.named_buffers()},
    }


@pytest.mark.ray
def test_two_worker_ddp_trial_all_reduces_counts_and_builds_the_loss_from_them(ray_session, tmp_path):
    import sys

    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    spec = tiny_spec(losses=[{"name": "logit_adjusted", "tau": 1.0}])
    trial = plan_trials(spec)[1]
    trainer = TorchTrainer(
        _probe_loop,
        train_loop_config={"trial": trial, "dataset": DIGITS},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.99}),
        run_config=ray.train.RunConfig(name="ddp-probe", storage_path=str(tmp_path)),
    )
    result = trainer.fit()
    assert result.error is None
    out = result.return_value
    assert out["world"] == 2 and out["dist"] is True
    assert out["counts"] == out["dataset_counts"]
    assert out["shard"] != out["counts"] and sum(out["shard"]) < sum(out["counts"])  # a real shard, summed
    counts = torch.tensor(out["counts"], dtype=torch.float64)
    buffers = {k: torch.tensor(v, dtype=torch.float64) for k, v in out["buffers"].items()}
    expected = torch.log(counts / counts.sum())
    assert any(torch.allclose(b, expected, atol=1e-5) for b in buffers.values() if b.shape == expected.shape)
    metrics = json.loads(result.metrics[METRICS_JSON])
    assert metrics["epoch"] == 2 and len(metrics["per_class_accuracy"]) == 10
    assert result.checkpoint is not None
    # Each worker evaluates a shard of the validation split too (its summable state all-reduced, as for test).
    assert 0 <= metrics["val_balanced_accuracy"] <= 1 and "val_ece" in metrics
    assert result.metrics[SELECTION_SCORE] == max(metrics["val_balanced_accuracy"], result.metrics[SELECTION_SCORE])
    # The post-hoc grids are all-reduced like the raw confusion: at tau = 0 they are the full splits' raw figures.
    for split, prefix in (("test", ""), ("val", "val_")):
        for method, rows in metrics["posthoc"][split].items():
            assert rows[0]["balanced_accuracy"] == metrics[f"{prefix}balanced_accuracy"], (split, method)
    with result.checkpoint.as_directory() as folder:
        state = torch.load(f"{folder}/checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["extra"]["manifest"]["epoch"] == 2 and state["extra"]["manifest"]["num_classes"] == 10


@pytest.mark.ray
def test_small_search_over_two_branches_returns_a_complete_result(ray_session, tmp_path):
    spec = tiny_spec()
    events = []
    result = run_job(spec, storage_path=tmp_path, on_event=events.append, experiment_name="tune-job_t")
    assert json.loads(json.dumps(result)) == result  # plain JSON
    trials = result["trials"]
    assert len(trials) == 3 and sum(t["is_control"] for t in trials) == 1
    assert {t["branch"] for t in trials} == {"control", "focal", "logit_adjusted"}
    for t in trials:
        assert t["status"] == "succeeded" and [h["epoch"] for h in t["history"]] == [1, 2]
        assert len(t["final"]["per_class_accuracy"]) == 10 and t["best"]["epoch"] in (1, 2)
        assert set(t["final"]) >= {"many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy", "ece"}
        assert t["checkpoint_path"]
    control = next(t for t in trials if t["is_control"])
    for t in trials:  # selected on validation: the epoch with the best val metric, reported with its test metric
        val = [h["val_balanced_accuracy"] for h in t["history"]]
        epoch = val.index(max(val)) + 1
        assert t["selected"]["epoch"] == t["best"]["epoch"] == epoch and t["seed"] == 0
        assert (
            t["best"]["value"]
            == t["selected"]["test"]["balanced_accuracy"]
            == t["history"][epoch - 1]["balanced_accuracy"]
        )
    for b in result["branches"]:
        assert math.isclose(b["gain"], b["best_value"] - control["best"]["value"])
        assert b["n_seeds"] == 1 and b["gain_ci95"] is None and b["config_id"] == f"{b['branch']}/0"
    best = max(trials, key=lambda t: t["selected"]["val"]["balanced_accuracy"])
    assert result["best_trial"]["trial_id"] == best["trial_id"] and result["selected_on"] == "val"
    assert result["dataset"]["fingerprint"] and sum(result["dataset"]["class_counts"]) > 0
    from jobs.model_out import checkpoint_at_epoch

    for t in trials:  # Ray kept the selected epoch's checkpoint (ranked by checkpoint_score) and the last one
        assert checkpoint_at_epoch(tmp_path, "job_t", t["trial_id"], t["selected"]["epoch"]) is not None
        assert checkpoint_at_epoch(tmp_path, "job_t", t["trial_id"], 2) is not None
    assert result["dataset"]["val_size"] == result["dataset"]["test_size"] == 250  # 50 per class, halved
    kinds = [e["type"] for e in events]
    assert kinds.count("trial_started") == 3 and kinds.count("trial_finished") == 3 and kinds.count("epoch") == 6


@pytest.mark.ray
def test_tpe_with_asha_keeps_the_control_and_respects_the_grace_period(ray_session, tmp_path):
    spec = tiny_spec(
        losses=[{"name": "focal", "gamma": {"uniform": [0.5, 3.0]}}, {"name": "ib", "start_epoch": 1}],
        train={"epochs": 3, "batch_size": 64, "lr": {"loguniform": [0.01, 0.3]}},
        tune={
            "num_samples": 1,
            "search": "tpe",
            "scheduler": "asha",
            "grace_period": 1,
            "reduction_factor": 2,
            "max_concurrent_trials": 2,
            "repeats": 2,
        },
    )
    result = run_job(spec, storage_path=tmp_path)
    trials = result["trials"]
    assert len(trials) == spec.trial_count() == 6  # (2 configs + the control) x 2 seeds
    controls = [t for t in trials if t["is_control"]]
    assert [t["seed"] for t in sorted(controls, key=lambda t: t["seed"])] == [0, 1]
    assert all(t["status"] == "succeeded" and len(t["history"]) == 3 for t in controls)
    by_config: dict[str, list] = {}
    for t in trials:
        assert len(t["history"]) >= 2  # grace = IB start (1) + 1: nobody is stopped before re-balancing runs
        assert t["status"] in ("succeeded", "stopped")
        by_config.setdefault(t["config_id"], []).append(t)
    # TPE's suggestions run once per seed: each config id has seeds 0 and 1 and one set of parameters
    assert len(by_config) == 3 and all(sorted(t["seed"] for t in ts) == [0, 1] for ts in by_config.values())
    for ts in by_config.values():
        assert len({json.dumps({k: v for k, v in t["config"].items() if k != "train.seed"}) for t in ts}) == 1
    for b in result["branches"]:
        assert b["n_seeds"] == 2 and b["n_pairs"] == 2 and b["gain_ci95"] is not None


def _crash_once_after_first_report(config, api, entry):
    """Run ``entry(config)`` (a real trial entry point) so that its first attempt crashes after its first report.

    ``api`` is ``ray.train`` or ``ray.tune``: where the entry point reports and gets its checkpoint from. Each
    attempt leaves a marker file saying whether it started fresh or from which epoch's checkpoint.
    """
    from pathlib import Path

    import torch

    marker = Path(config["marker"])
    checkpoint = api.get_checkpoint()
    if checkpoint is None:
        (marker.parent / "attempt-fresh").touch()
    else:
        with checkpoint.as_directory() as path:
            epoch = torch.load(f"{path}/checkpoint.pt", weights_only=False)["epoch"]
        (marker.parent / f"attempt-resumed-at-{epoch}").touch()
    real_report = api.report
    if not marker.exists():

        def report_then_crash(metrics, checkpoint=None):
            real_report(metrics, checkpoint=checkpoint)
            marker.touch()
            raise RuntimeError("injected failure")

        api.report = report_then_crash
    try:
        entry(config)
    finally:
        api.report = real_report


def _flaky_loop(config):
    """The real Ray Train worker loop, crashing after its first report on the first attempt only."""
    import ray.train

    from jobs.train import train_loop_per_worker

    _crash_once_after_first_report(config, ray.train, train_loop_per_worker)


@pytest.mark.ray
def test_a_failed_worker_is_retried_from_the_last_checkpoint(ray_session, tmp_path):
    import sys

    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    trial = plan_trials(tiny_spec(train={"epochs": 3, "batch_size": 64, "lr": 0.1}))[1]
    trainer = TorchTrainer(
        _flaky_loop,
        train_loop_config={"trial": trial, "dataset": DIGITS, "marker": str(tmp_path / "crashed")},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.99}),
        run_config=ray.train.RunConfig(
            name="flaky", storage_path=str(tmp_path / "ray"), failure_config=ray.train.FailureConfig(max_failures=1)
        ),
    )
    result = trainer.fit()
    assert result.error is None
    assert (tmp_path / "crashed").exists()  # the first attempt did fail
    assert (tmp_path / "attempt-fresh").exists()
    assert (tmp_path / "attempt-resumed-at-1").exists()  # the retry got epoch 1's checkpoint
    metrics = json.loads(result.metrics[METRICS_JSON])
    assert metrics["epoch"] == 3
    with result.checkpoint.as_directory() as path:
        state = torch.load(f"{path}/checkpoint.pt", weights_only=False)
    # one history entry per epoch, carried over from the checkpoint
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------------------
# The in-process trial path (one worker: no Train controller, no worker group) and what makes trials cheap
# ---------------------------------------------------------------------------------------------------------------
def test_checkpoint_policy_writes_on_improvement_at_the_end_and_after_the_interval():
    from jobs.train import CheckpointPolicy

    ctx = TrialContext(checkpoint_metric="balanced_accuracy", checkpoint_mode="max", checkpoint_interval_s=3600)
    policy = CheckpointPolicy(ctx, [])
    values = [0.5, 0.4, 0.6, 0.6, 0.55]
    due = [policy.due({"balanced_accuracy": v}, last=i == len(values) - 1) for i, v in enumerate(values)]
    assert due == [True, False, True, False, True]  # better, worse, better, a tie, the last epoch

    minimised = CheckpointPolicy(TrialContext(checkpoint_metric="nll", checkpoint_mode="min"), [{"nll": 1.0}])
    assert not minimised.due({"nll": 1.5}, last=False) and minimised.due({"nll": 0.9}, last=False)

    always = CheckpointPolicy(TrialContext(), [])  # no metric: every epoch, as plain run_trial callers expect
    assert all(always.due({"balanced_accuracy": 0.1}, last=False) for _ in range(3))

    timed = CheckpointPolicy(TrialContext(checkpoint_metric="balanced_accuracy", checkpoint_interval_s=0.0), [])
    assert timed.due({"balanced_accuracy": 0.5}, last=False) and timed.due({"balanced_accuracy": 0.1}, last=False)


def test_cached_dataset_loads_once_per_process_and_reloads_a_changed_file(tmp_path):
    import numpy as np

    from jobs.train import cached_dataset

    a = cached_dataset(DIGITS)
    assert cached_dataset(dict(DIGITS)) is a  # same parameters: the same object, not a reload
    assert cached_dataset(DIGITS | {"seed": 1}) is not a

    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)

    def write(n: int) -> None:
        y = np.repeat(np.arange(3), [n, 4, 2])
        np.savez(
            path,
            x_train=rng.normal(size=(len(y), 5)).astype(np.float32),
            y_train=y,
            x_test=rng.normal(size=(6, 5)).astype(np.float32),
            y_test=np.repeat(np.arange(3), 2),
        )

    write(8)
    first = cached_dataset({"name": "npz", "path": str(path)})
    assert cached_dataset({"name": "npz", "path": str(path)}) is first
    write(9)  # a changed file (size and mtime) is a new key
    second = cached_dataset({"name": "npz", "path": str(path)})
    assert second is not first and int(second.class_counts[0]) == 9


def test_concurrent_trials_follow_the_cluster_unless_the_spec_sets_them():
    from jobs.tune import concurrent_trials, trial_placement

    spec = tiny_spec(tune={"num_samples": 4})  # 9 trials of one worker, 0.99 CPU each
    assert spec.tune.max_concurrent_trials is None
    assert trial_placement(spec) == {"CPU": 0.99}  # the trial's own process holds the worker's CPU
    assert concurrent_trials(spec, {"CPU": 2.0}) == 2
    assert concurrent_trials(spec, {"CPU": 64.0}) == spec.trial_count() == 9
    assert concurrent_trials(spec, {"CPU": 0.5}) == 1
    gpu = tiny_spec(
        scaling={"num_workers": 1, "cpus_per_worker": 1, "use_gpu": True, "gpus_per_worker": 0.25},
        tune={"num_samples": 1},
    )
    assert trial_placement(gpu) == {"CPU": 1, "GPU": 0.25}
    assert concurrent_trials(gpu, {"CPU": 16.0, "GPU": 1.0}) == 3  # 4 fit the GPU; 3 trials in all
    ddp = tiny_spec(scaling={"num_workers": 2, "cpus_per_worker": 1}, tune={"num_samples": 1})
    assert trial_placement(ddp) == {"CPU": 0.01}  # DDP workers reserve their own resources
    assert concurrent_trials(ddp, {"CPU": 4.0}) == 1  # 2.01 CPUs per trial
    assert concurrent_trials(tiny_spec(tune={"max_concurrent_trials": 5}), {"CPU": 2.0}) == 5


def _flaky_in_process(config):
    """The real in-process trial, crashing after its first report on the first attempt only."""
    import ray.tune

    from jobs.train import trial_in_process

    _crash_once_after_first_report(config, ray.tune, trial_in_process)


@pytest.mark.ray
def test_a_failed_in_process_trial_is_retried_from_its_last_checkpoint(ray_session, tmp_path):
    import sys

    import ray.cloudpickle
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    trial = plan_trials(tiny_spec(train={"epochs": 3, "batch_size": 64, "lr": 0.1}))[1]
    config = {
        "trial": trial,
        "dataset": DIGITS,
        "marker": str(tmp_path / "crashed"),
        "checkpoint": {"metric": "balanced_accuracy", "mode": "max", "interval_s": 3600.0},
    }
    tuner = tune.Tuner(
        tune.with_resources(_flaky_in_process, {"CPU": 0.99}),
        param_space=config,
        run_config=tune.RunConfig(
            name="flaky-in-process",
            storage_path=str(tmp_path / "ray"),
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    result = tuner.fit()[0]
    assert result.error is None
    assert (tmp_path / "crashed").exists()  # the first attempt did fail
    assert (tmp_path / "attempt-fresh").exists()
    assert (tmp_path / "attempt-resumed-at-1").exists()  # the retry got epoch 1's checkpoint
    assert json.loads(result.metrics[METRICS_JSON])["epoch"] == 3
    with result.checkpoint.as_directory() as path:
        state = torch.load(f"{path}/checkpoint.pt", weights_only=False)
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]  # one entry per epoch, carried over


@pytest.mark.ray
def test_a_dataset_that_cannot_be_loaded_stops_the_search_and_fails_the_job(ray_session, tmp_path):
    spec = tiny_spec(dataset={"name": "npz", "path": str(tmp_path / "missing.npz")}, tune={"num_samples": 3})
    assert spec.trial_count() == 7
    events = []
    with pytest.raises(Exception, match="missing.npz"):
        run_job(spec, storage_path=tmp_path / "ray", on_event=events.append)
    started = [e for e in events if e["type"] == "trial_started"]
    failed = [e for e in events if e["type"] == "trial_finished" and e["status"] == "failed"]
    assert failed and "missing.npz" in failed[0]["error"]
    assert len(started) < spec.trial_count()  # the first failure stopped the search; the rest never started
