"""The search: a Ray Tune run over the spec's loss branches, each trial a Ray Train (DDP) run.

Ray 2.60 (Train V2): a Tune trial is a small driver function that builds and fits a ``TorchTrainer``; the
``TuneReportCallback`` forwards rank 0's per-epoch reports to Tune.

- ``random`` / ``grid`` search: the trials are planned here (``plan_trials``): the control, then for each branch
  the cartesian product of its grid axes times ``num_samples`` random draws of its other domains (seeded by
  ``tune.seed``). Each branch only samples its own parameters. Tune runs the list (grid over planned trials).
- ``tpe``: Optuna's TPE over a conditional define-by-run space (``branch`` first, then that branch's own
  parameters); ``num_samples`` per branch sets the total budget (branches x num_samples); the control is the
  first trial.
- ASHA never stops a trial before its re-balancing starts (grace period >= the latest DRW / IB start epoch + 1)
  and never stops the control.
- ``tune.repeats``: every planned config (the control too) runs once per train seed ``train.seed + r``, its trials
  sharing a ``config_id``; TPE wraps its searcher in a ``Repeater`` and is told a config's mean score. ASHA stops
  seeds individually. Tune's metric is ``SELECTION_SCORE``: the trial's selection metric (``val_<metric>`` with
  ``evaluation.selection: "val"``) at the epoch it would report now.

``run_job`` returns a plain JSON-serialisable JobResult (see docs/ARCHITECTURE.md) and emits events as trials
start, report epochs and finish.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from jobs.results import CHECKPOINT_SCORE, METRICS_JSON, SELECTION_SCORE, ResultCollector, keep_checkpoints_setting
from jobs.spec import (
    TRIAL_DRIVER_CPU,
    Choice,
    Grid,
    JobSpec,
    LogUniform,
    QUniform,
    RandInt,
    Uniform,
    is_domain,
)

logger = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any]], None]
TRAIN_SEARCHABLE = ("batch_size", "optimizer", "lr", "momentum", "weight_decay")
TRIAL_INDEX = "__trial_index__"  # ray.tune.search.repeater.TRIAL_INDEX (a Repeater's repeat index in the config)
TRAIN_FIXED = (
    "epochs",
    "schedule",
    "milestones",
    "lr_decay",
    "warmup_epochs",
    "seed",
    "precision",
    "loader_workers",
)


# --------------------------------------------------------------------------------------------------------------
# Planning (pure; no Ray)
# --------------------------------------------------------------------------------------------------------------
def sample_domain(domain: Any, rng: np.random.Generator) -> Any:
    """Draw one value from a search domain (the same semantics as Ray Tune's)."""
    if isinstance(domain, (Choice, Grid)):
        values = domain.choice if isinstance(domain, Choice) else domain.grid
        return values[int(rng.integers(len(values)))]
    if isinstance(domain, Uniform):
        return float(rng.uniform(*domain.uniform))
    if isinstance(domain, LogUniform):
        lo, hi = domain.loguniform
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if isinstance(domain, RandInt):
        return int(rng.integers(*domain.randint))
    if isinstance(domain, QUniform):
        lo, hi, q = domain.quniform
        value = round(rng.uniform(lo, hi) / q) * q
        return int(value) if float(q).is_integer() and float(lo).is_integer() else float(value)
    raise TypeError(f"not a search domain: {domain!r}")


def center_value(domain: Any) -> Any:
    """A deterministic representative of a domain (used for the control trial's shared train params)."""
    if isinstance(domain, Choice):
        return domain.choice[0]
    if isinstance(domain, Grid):
        return domain.grid[0]
    if isinstance(domain, Uniform):
        return float(sum(domain.uniform) / 2)
    if isinstance(domain, LogUniform):
        return float(math.sqrt(domain.loguniform[0] * domain.loguniform[1]))
    if isinstance(domain, RandInt):
        return int((domain.randint[0] + domain.randint[1] - 1) // 2)
    lo, hi, q = domain.quniform
    value = round((lo + hi) / 2 / q) * q
    return int(value) if float(q).is_integer() and float(lo).is_integer() else float(value)


def _sections(spec: JobSpec, index: int | None) -> dict[str, dict[str, Any]]:
    """The searchable values of one branch (None = the control), grouped by section."""
    model = spec.model.model_dump()
    model.pop("name")
    train = {k: getattr(spec.train, k) for k in TRAIN_SEARCHABLE}
    if index is None:
        return {"loss": {}, "branch": {}, "train": train, "model": model}
    branch = spec.losses[index]
    extra = {"start_epoch": branch.start_epoch} if hasattr(branch, "start_epoch") else {}
    return {"loss": branch.loss_params(), "branch": extra, "train": train, "model": model}


def evaluation_options(spec: JobSpec) -> dict[str, Any]:
    """What a trial needs to know of ``spec.evaluation``: whether to split off validation, and what it selects on."""
    return {
        "split": spec.evaluation.selection == "val",
        "val_fraction": spec.evaluation.val_fraction,
        "seed": int(getattr(spec.dataset, "seed", 0)),
        "metric": spec.selection_metric,
        "mode": spec.tune.resolved_mode,
        "epoch": spec.evaluation.epoch,
    }


def _assemble(
    spec: JobSpec,
    index: int | None,
    values: dict[str, dict[str, Any]],
    sample: int,
    repeat: int = 0,
    config_id: str | None = None,
) -> dict[str, Any]:
    branch = spec.losses[index] if index is not None else None
    rw = branch.reweighting if branch is not None and branch.reweighting is not None else spec.reweighting
    train = {k: getattr(spec.train, k) for k in TRAIN_FIXED} | values["train"]
    train["milestones"] = list(train["milestones"])
    # Every config, the control included, runs with seeds train.seed + r: seed r of a branch pairs with the control's.
    train["seed"] = spec.train.seed + repeat
    key = "control" if branch is None else branch.key
    if branch is None:  # the control: plain cross-entropy, no re-weighting, same model and schedule
        rw_dict = {"scheme": "none", "beta": 0.9999, "start_epoch": None}
    else:
        rw_dict = rw.model_dump()
    searched = {f"loss.{k}": v for k, v in values["loss"].items()}
    searched |= {f"{branch.name if branch else 'ce'}.{k}": v for k, v in values["branch"].items()}
    searched |= {f"train.{k}": values["train"][k] for k in TRAIN_SEARCHABLE if is_domain(getattr(spec.train, k))}
    searched |= {f"model.{k}": values["model"][k] for k in values["model"] if is_domain(getattr(spec.model, k, None))}
    return {
        "branch": "control" if branch is None else branch.key,
        "branch_index": -1 if branch is None else index,
        "is_control": branch is None,
        "loss": "ce" if branch is None else branch.name,
        "loss_params": values["loss"],
        "loss_start_epoch": int(values["branch"].get("start_epoch", 0)),
        "normalized": getattr(branch, "normalized", None),
        "reweighting": rw_dict,
        "model": spec.model.name,
        "model_params": values["model"],
        "train": train,
        "sample_index": sample,
        "repeat": repeat,
        "config_id": config_id or f"{key}/{sample}",
        "evaluation": evaluation_options(spec),
        # The config the results show; seed and config_id ride along (the store keeps a trial's config as JSON).
        "config": searched
        | {
            "reweighting": rw_dict["scheme"] + ("-drw" if rw_dict["start_epoch"] else ""),
            "config_id": config_id or f"{key}/{sample}",
            "seed": train["seed"],
        },
    }


def with_repeat(trial: dict[str, Any], repeat: int, base_seed: int) -> dict[str, Any]:
    """A copy of a planned trial for repeat ``repeat`` (train seed ``base_seed + repeat``); the config_id is kept."""
    seed = base_seed + repeat
    return trial | {
        "repeat": repeat,
        "train": trial["train"] | {"seed": seed},
        "config": trial["config"] | {"seed": seed},
    }


def resolve_trial(config: dict[str, Any]) -> dict[str, Any]:
    """The planned trial of a Tune config; a ``Repeater``'s trial index (TPE with repeats) sets its repeat."""
    trial = config["trial"]
    index = config.get(TRIAL_INDEX)
    if index is None or int(index) == trial.get("repeat", 0):
        return trial
    return with_repeat(trial, int(index), trial["train"]["seed"] - int(trial.get("repeat", 0)))


def control_trial(spec: JobSpec, repeat: int = 0) -> dict[str, Any]:
    """The plain cross-entropy control: the same model and schedule, shared train domains at their centre."""
    values = {
        s: {k: center_value(v) if is_domain(v) else v for k, v in d.items()} for s, d in _sections(spec, None).items()
    }
    return _assemble(spec, None, values, 0, repeat)


def plan_trials(spec: JobSpec) -> list[dict[str, Any]]:
    """Every trial of a random/grid search, control first; deterministic for a given ``tune.seed``.

    Each planned config (the control too) appears ``tune.repeats`` times in a row, with train seeds
    ``train.seed + r`` and one ``config_id``.
    """
    rng = np.random.default_rng(spec.tune.seed)
    grid_choices = spec.tune.search == "grid"
    trials = []
    repeats = range(spec.tune.repeats)
    if spec.tune.control:
        trials += [control_trial(spec, r) for r in repeats]
    for index in range(len(spec.losses)):
        configs = 0  # numbers the branch's configs: config_id "<branch>/<n>"
        sections = _sections(spec, index)
        axes = [
            (s, k, v.grid if isinstance(v, Grid) else v.choice)
            for s, d in sections.items()
            for k, v in d.items()
            if isinstance(v, Grid) or (grid_choices and isinstance(v, Choice))
        ]
        for combo in itertools.product(*[values for _, _, values in axes]):
            fixed = {(s, k): value for (s, k, _), value in zip(axes, combo, strict=True)}
            for sample in range(spec.tune.num_samples):
                values = {
                    s: {
                        k: fixed[(s, k)] if (s, k) in fixed else (sample_domain(v, rng) if is_domain(v) else v)
                        for k, v in d.items()
                    }
                    for s, d in sections.items()
                }
                config_id = f"{spec.losses[index].key}/{configs}"
                configs += 1
                trials += [_assemble(spec, index, values, sample, r, config_id) for r in repeats]
    return trials


def _suggest(name: str, domain: Any, ot_trial: Any) -> Any:
    """Ask an Optuna trial for a value of ``domain`` under ``name``."""
    if isinstance(domain, Choice):
        return ot_trial.suggest_categorical(name, domain.choice)
    if isinstance(domain, Uniform):
        return ot_trial.suggest_float(name, *domain.uniform)
    if isinstance(domain, LogUniform):
        return ot_trial.suggest_float(name, *domain.loguniform, log=True)
    if isinstance(domain, RandInt):
        return ot_trial.suggest_int(name, domain.randint[0], domain.randint[1] - 1)
    lo, hi, q = domain.quniform
    if float(q).is_integer() and float(lo).is_integer():
        return ot_trial.suggest_int(name, int(lo), int(hi), step=int(q))
    return ot_trial.suggest_float(name, lo, hi, step=q)


class TPESpace:
    """An Optuna define-by-run space: the control first, then ``branch`` and that branch's own parameters.

    With ``tune.repeats`` > 1 a ``Repeater`` runs each suggestion once per seed and tells TPE their mean selection
    score (the mean validation metric over the config's repeats).

    A picklable callable (Tune checkpoints its searcher). Tune asks for suggestions from its one driver thread.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.control_pending = spec.tune.control
        self.suggested = 0  # numbers the configs (config_id); a Repeater copies one suggestion to all its repeats

    def __call__(self, ot_trial: Any) -> dict[str, Any]:
        spec = self.spec
        if self.control_pending:
            self.control_pending = False
            return {"trial": control_trial(spec)}
        keys = [b.key for b in spec.losses]
        key = ot_trial.suggest_categorical("branch", keys)
        index = keys.index(key)
        values = {}
        for s, d in _sections(spec, index).items():
            prefix = key if s in ("loss", "branch") else s
            values[s] = {k: _suggest(f"{prefix}.{k}", v, ot_trial) if is_domain(v) else v for k, v in d.items()}
        self.suggested += 1
        return {"trial": _assemble(spec, index, values, 0, 0, f"{key}/{self.suggested}")}


def tpe_space(spec: JobSpec) -> TPESpace:
    """The conditional define-by-run space for TPE (see ``TPESpace``)."""
    return TPESpace(spec)


def asha_grace_period(spec: JobSpec) -> int:
    """ASHA's grace period: the spec's, but never before the latest re-balancing start (DRW / IB) + 1."""
    return min(spec.train.epochs, max(spec.tune.grace_period or 1, spec.rebalancing_start() + 1))


def dataset_meta(spec: JobSpec) -> dict[str, Any]:
    """Name, fingerprint, class names/counts and shot groups of the spec's training set, and the sizes of its
    validation and test splits (loads the data; the fingerprint covers the val/test partition)."""
    from jobs.train import trial_data
    from lt_core.metrics import shot_groups

    params = spec.dataset.model_dump()
    name = params["name"]
    data = trial_data(params, evaluation_options(spec))
    return {
        "name": name,
        "fingerprint": data.fingerprint,
        "val_size": None if data.val is None else len(data.val),
        "test_size": len(data.test),
        "class_names": list(data.class_names),
        "class_counts": data.class_counts.tolist(),
        "num_classes": data.num_classes,
        "shot_groups": shot_groups(data.class_counts),
    }


# --------------------------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------------------------
def _trial_driver(config: dict[str, Any], job: dict[str, Any]) -> None:
    """One Tune trial: in this process for one worker, else a ``TorchTrainer`` (Train V2 + Tune) for DDP."""
    train_config = {
        "trial": resolve_trial(config),
        "dataset": job["dataset"],
        "threads": max(1, int(job["scaling"]["cpus_per_worker"])),
        "checkpoint": job["checkpoint"],
    }
    if job["in_process"]:
        from jobs.train import trial_in_process

        trial_in_process(train_config)
        return

    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from jobs.train import train_loop_per_worker

    # The Train controller polls its workers at this interval (2 s by default): reports, and the end of a short
    # trial, wait for the poll. Ray propagates the variable from this process to the controller and workers.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    scaling = job["scaling"]
    gpus = scaling["gpus"]
    resources = {"CPU": scaling["cpus_per_worker"]} | ({"GPU": gpus} if gpus else {})
    trial_name = ray.tune.get_context().get_trial_name()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=train_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling["num_workers"], use_gpu=scaling["use_gpu"], resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"{job['experiment']}-{trial_name}",
            storage_path=job["storage_path"],
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=scaling["max_failures"], controller_failure_limit=2),
            checkpoint_config=ray.train.CheckpointConfig(**_keep_checkpoints(job)),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def _keep_checkpoints(job: dict[str, Any]) -> dict[str, Any]:
    """Per trial, the best checkpoint by the job's metric and the latest (Ray never deletes the latest, which a retry
    resumes from). ``LONGTAIL_KEEP_CHECKPOINTS=all`` keeps every checkpoint written; with ``selected`` the driver
    removes the last epoch's too once the job is done (``jobs.model_out.prune_checkpoints``)."""
    if keep_checkpoints_setting() == "all":
        return {}
    return {
        "num_to_keep": 1,
        "checkpoint_score_attribute": CHECKPOINT_SCORE,  # the selection metric, ties to the earlier epoch
        "checkpoint_score_order": job["checkpoint"]["mode"],
    }


def trial_placement(spec: JobSpec, in_process: bool | None = None) -> dict[str, float]:
    """What Tune reserves for one trial.

    A single-worker trial trains in the trial's own process (``in_process``, the default for one worker), which
    holds the worker's CPUs and GPUs. A DDP trial's process only drives a ``TorchTrainer`` (``TRIAL_DRIVER_CPU``);
    its workers reserve their own resources.
    """
    s = spec.scaling
    if s.num_workers == 1 if in_process is None else in_process:
        return {"CPU": s.cpus_per_worker} | ({"GPU": s.gpus} if s.gpus else {})
    return {"CPU": TRIAL_DRIVER_CPU}


def concurrent_trials(spec: JobSpec, cluster: dict[str, float]) -> int:
    """How many trials run at once: the spec's ``max_concurrent_trials``, or as many as the cluster holds."""
    if spec.tune.max_concurrent_trials is not None:
        return spec.tune.max_concurrent_trials
    need = spec.trial_resources()
    fits = [math.floor(cluster.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0]
    return max(1, min([*fits, spec.trial_count()]))


class DeferredDatasetMeta:
    """``dataset_meta`` of the job's dataset, loaded in a thread of the driver once the first trial reported or failed.

    Only the final result needs it. Loading it earlier would compete for the CPUs with the first trials, which load
    the data in their own processes; a trial's failure starts it at once, so a dataset that cannot be loaded stops
    the search (``_make_stopper``) after the first failure instead of failing every trial.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.future: Future | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self.future is None:
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset-meta")
                self.future = pool.submit(dataset_meta, self.spec)
                pool.shutdown(wait=False)

    def failed(self) -> bool:
        future = self.future
        return future is not None and future.done() and future.exception() is not None

    def result(self) -> dict[str, Any]:
        self.start()
        assert self.future is not None
        return self.future.result()


def _make_callback(collector: ResultCollector, emit: EventSink, epochs: int, meta: DeferredDatasetMeta):
    from ray.tune import Callback

    global _EventCallback
    if _EventCallback is None:

        class EventCallback(Callback):
            """Turns Tune's trial life-cycle into job events (runs in the job driver process)."""

            def __init__(
                self, collector: ResultCollector, emit: EventSink, epochs: int, meta: DeferredDatasetMeta
            ) -> None:
                self.collector, self.emit, self.epochs, self.meta = collector, emit, epochs, meta

            # The Tuner pickles its callbacks for Tuner.restore; the sink (HTTP clients, locks) stays out of that.
            def __getstate__(self) -> dict:
                return {}

            def on_trial_start(self, iteration, trials, trial, **info):
                t = resolve_trial(trial.config)
                self.emit(
                    {
                        "type": "trial_started",
                        "trial_id": trial.trial_id,
                        "branch": t["branch"],
                        "branch_index": t["branch_index"],
                        "is_control": t["is_control"],
                        "config": t["config"],
                        "config_id": t["config"]["config_id"],
                        "seed": t["config"]["seed"],
                    }
                )

            def on_trial_result(self, iteration, trials, trial, result, **info):
                self.meta.start()
                if METRICS_JSON not in result:
                    return
                metrics = json.loads(result[METRICS_JSON])
                self.emit(
                    {
                        "type": "epoch",
                        "trial_id": trial.trial_id,
                        "epoch": int(metrics["epoch"]),
                        "metrics": metrics,
                        "checkpoint_path": result.get("checkpoint_path"),
                    }
                )

            def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
                # In-process trials: Tune persists a reported checkpoint after on_trial_result has run.
                self.collector.set_checkpoint(trial.trial_id, checkpoint.path)

            def on_trial_complete(self, iteration, trials, trial, **info):
                done = self.collector.trials.get(trial.trial_id, {}).get("history", [])
                last = done[-1]["epoch"] if done else 0
                self.emit(
                    {
                        "type": "trial_finished",
                        "trial_id": trial.trial_id,
                        "status": "succeeded" if last >= self.epochs else "stopped",
                        "error": None,
                    }
                )

            def on_trial_error(self, iteration, trials, trial, **info):
                self.meta.start()
                self.emit(
                    {
                        "type": "trial_finished",
                        "trial_id": trial.trial_id,
                        "status": "failed",
                        "error": _short_error(_trial_error(trial)),
                    }
                )

        EventCallback.__qualname__ = EventCallback.__name__ = "_EventCallback"
        _EventCallback = EventCallback
    return _EventCallback(collector, emit, epochs, meta)


# Defined on first use (it subclasses a Ray class, and this module must import without Ray).
_EventCallback = None
_DatasetStopper = None


def _make_stopper(meta: DeferredDatasetMeta):
    """A Tune stopper that ends the search as soon as the dataset's description failed to load."""
    from ray.tune import Stopper

    global _DatasetStopper
    if _DatasetStopper is None:

        class DatasetStopper(Stopper):
            def __init__(self, meta: DeferredDatasetMeta) -> None:
                self.meta = meta

            def __getstate__(self) -> dict:  # Tune saves its stopper with the experiment; the thread stays out of it
                return {"meta": None}

            def __call__(self, trial_id: str, result: dict) -> bool:
                return False

            def stop_all(self) -> bool:
                return self.meta is not None and self.meta.failed()

        DatasetStopper.__qualname__ = DatasetStopper.__name__ = "_DatasetStopper"
        _DatasetStopper = DatasetStopper
    return _DatasetStopper(meta)


def _trial_error(trial: Any) -> str:
    """The failed trial's error text. Tune writes it to the trial's local folder first and copies it to the storage
    path later, where ``Trial.get_error`` looks, so read the local file when the copy is not there yet."""
    error = trial.get_error()
    if error is not None:
        return str(error)
    path = trial.error_file
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    return "trial failed"


def _event_key(event: dict[str, Any]) -> tuple[Any, ...]:
    kind = event.get("type")
    if kind == "epoch":
        return (kind, event.get("trial_id"), event.get("epoch"))
    if kind == "trial_finished":
        return (kind, event.get("trial_id"), event.get("status"))
    return (kind, event.get("trial_id"))


def _tuner(trainable: Any, *, resume: bool, param_space: dict[str, Any], tune_config: Any, run_config: Any) -> Any:
    """A new Tuner, or (``resume``, and the experiment can be restored) the lost run's, restored from storage."""
    from ray import tune

    path = str(Path(run_config.storage_path) / run_config.name)
    if resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(
            path, trainable=trainable, param_space=param_space or None, resume_unfinished=True, resume_errored=True
        )
        # The restored run config's callbacks and stopper were pickled without their sink and dataset loader
        # (their __getstate__): put this run's in.
        restored = tuner._local_tuner.get_run_config()
        restored.callbacks, restored.stop = run_config.callbacks, run_config.stop
        return tuner
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _short_error(text: str, limit: int = 2000) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-12:])[-limit:]


def _make_scheduler(spec: JobSpec):
    if spec.tune.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class ControlSafeASHA(ASHAScheduler):
        """ASHA that never stops the control trial (every gain is measured against it).

        With ``tune.repeats`` each seed is a trial of its own, and ASHA stops seeds individually: at each rung a
        seed is compared with every trial that reached that rung (the other seeds of its config included) by its
        selection score. A config keeps the seeds that ASHA let run; its row counts those that reported.
        """

        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if trial.config.get("trial", {}).get("is_control"):
                return TrialScheduler.CONTINUE
            return decision

    return ControlSafeASHA(
        time_attr="training_iteration",
        max_t=spec.train.epochs,
        grace_period=asha_grace_period(spec),
        reduction_factor=spec.tune.reduction_factor,
    )


def make_search_alg(spec: JobSpec) -> Any:
    """TPE's searcher (None for random and grid search, whose trials are planned).

    Optuna's TPE over ``tpe_space``, scored by ``SELECTION_SCORE``. With ``tune.repeats`` > 1 it is wrapped in a
    ``ray.tune.search.Repeater``: each suggestion runs once per seed (the repeat index sets the seed, see
    ``resolve_trial``), and TPE is told the mean of the seeds' scores (the mean validation metric of the config).
    """
    if spec.tune.search != "tpe":
        return None
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    search_alg = OptunaSearch(
        space=tpe_space(spec),
        metric=SELECTION_SCORE,
        mode=spec.tune.resolved_mode,
        sampler=TPESampler(seed=spec.tune.seed, n_startup_trials=max(2, len(spec.losses))),
    )
    if spec.tune.repeats > 1:
        from ray.tune.search import Repeater

        search_alg = Repeater(search_alg, repeat=spec.tune.repeats, set_index=True)
    return search_alg


def run_job(
    spec: JobSpec | dict[str, Any],
    *,
    storage_path: str | os.PathLike[str],
    on_event: EventSink | None = None,
    ray_address: str | None = None,
    experiment_name: str | None = None,
    in_process: bool | None = None,
    resume: bool = False,
    prior_events: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Run the job's search on Ray and return the JobResult (see docs/ARCHITECTURE.md).

    Connects to ``ray_address`` (or ``RAY_ADDRESS``, or starts a local Ray) when Ray is not initialised yet.
    ``on_event`` receives trial started / epoch / trial finished events as they happen, from Tune's driver
    thread; it must not raise (errors are logged and ignored so a sink can never stop a search).

    Single-worker trials train in the Tune trial's own process (``in_process``, the default when
    ``scaling.num_workers`` is 1); ``in_process=False`` runs them as one-worker ``TorchTrainer`` runs instead, as
    DDP trials always run (the benchmark compares the two).

    ``resume``: continue the experiment ``experiment_name`` left in ``storage_path`` by a run that was lost (its Ray
    cluster died): finished trials are kept, unfinished and errored ones resume from their last checkpoints
    (``_tuner``). ``prior_events`` are the events that run reported; they are folded into the result, and an event
    seen before (a resumed trial starting again) is not emitted twice. With no saved experiment state it starts
    over.
    """
    import ray
    from ray import tune

    spec = spec if isinstance(spec, JobSpec) else JobSpec.model_validate(spec)
    # The job's results travel as events; Tune's own per-result JSON/CSV/TensorBoard loggers would only add work
    # to every report (and import tensorboardX). Without them, Tune's result grid warns that it finds no metrics.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    storage = str(Path(storage_path).expanduser().resolve())
    Path(storage).mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(address=ray_address, log_to_driver=False, configure_logging=False)

    name = experiment_name or f"{spec.name.replace(' ', '_')}-{int(time.time())}"
    # Resume what Tune saved; without its state (lost before the first save) the search starts over, afresh.
    resume = resume and tune.Tuner.can_restore(str(Path(storage) / name))
    meta = DeferredDatasetMeta(spec)
    collector = ResultCollector(spec)
    seen: set[tuple[Any, ...]] = set()
    for event in prior_events if resume else ():
        if event.get("type") in ("trial_started", "epoch", "trial_finished"):
            seen.add(_event_key(event))
            collector.apply(event)

    def emit(event: dict[str, Any]) -> None:
        if _event_key(event) in seen:
            return  # reported by the run this one resumes
        event.setdefault("time", time.time())
        collector.apply(event)
        if on_event is not None:
            try:
                on_event(event)
            except Exception:  # a broken sink must not kill the search
                logger.exception("on_event failed for %s", event.get("type"))

    if in_process is None:
        in_process = spec.scaling.num_workers == 1
    elif in_process and spec.scaling.num_workers > 1:
        raise ValueError("in_process trials have one worker; scaling.num_workers > 1 runs a TorchTrainer")
    job = {
        "dataset": spec.dataset.model_dump(),
        "scaling": spec.scaling.model_dump() | {"gpus": spec.scaling.gpus},
        "storage_path": storage,
        "experiment": name,
        "in_process": in_process,
        "checkpoint": {
            "metric": spec.selection_metric,
            "mode": spec.tune.resolved_mode,
            "interval_s": float(os.environ.get("LONGTAIL_CHECKPOINT_INTERVAL_S", "60")),
        },
    }
    trainable = tune.with_resources(tune.with_parameters(_trial_driver, job=job), trial_placement(spec, in_process))
    search_alg = make_search_alg(spec)
    if search_alg is not None:
        param_space: dict[str, Any] = {}
        num_samples = spec.trial_count()
    else:
        param_space = {"trial": tune.grid_search(plan_trials(spec))}
        num_samples = 1

    tuner = _tuner(
        trainable,
        resume=resume,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=SELECTION_SCORE,
            mode=spec.tune.resolved_mode,
            num_samples=num_samples,
            max_concurrent_trials=concurrent_trials(spec, ray.cluster_resources()),
            scheduler=_make_scheduler(spec),
            # A finished trial's process runs the next trial: torch stays imported and the dataset cached in it.
            reuse_actors=in_process,
            search_alg=search_alg,
            trial_name_creator=lambda t: f"trial_{t.trial_id}",
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[_make_callback(collector, emit, spec.train.epochs, meta)],
            stop=_make_stopper(meta),
            # In-process trials are retried by Tune from their last checkpoint; DDP trials by Ray Train.
            failure_config=tune.FailureConfig(max_failures=spec.scaling.max_failures if in_process else 0),
            checkpoint_config=tune.CheckpointConfig(**_keep_checkpoints(job)),
            verbose=0,
        ),
    )
    tuner.fit()
    collector.dataset = meta.result()  # a dataset that cannot be loaded fails the job here
    return collector.result()
