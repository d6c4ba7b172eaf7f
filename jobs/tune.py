"""The search: a Ray Tune run of the planned trials (``jobs.plan``), each trial a Ray Train (DDP) run.

Ray 2.60 (Train V2): a Tune trial is a small driver function that builds and fits a ``TorchTrainer``; the
``TuneReportCallback`` forwards rank 0's per-epoch reports to Tune.

- ``random`` / ``grid`` search: Tune runs the planner's list (``jobs.plan.plan_trials``) as a grid over planned
  trials.
- ``tpe``: Optuna's TPE over the planner's conditional define-by-run space (``jobs.plan.TPESpace``); ``num_samples``
  per branch sets the total budget (branches x num_samples); the control is the first trial.
- ASHA never stops a trial before its re-balancing starts (grace period >= the latest DRW / IB start epoch + 1)
  and never stops the control.
- ``tune.repeats``: every planned config (the control too) runs once per train seed ``train.seed + r``, its trials
  sharing a ``config_id``; TPE wraps its searcher in a ``Repeater`` and is told a config's mean score. ASHA stops
  seeds individually. Tune's metric is ``SELECTION_SCORE``: the trial's selection metric (``val_<metric>`` with
  ``evaluation.selection: "val"``) at the epoch it would report now.

A trial travels to its worker as the JSON of its ``TrialConfig``, validated there (``jobs.train``). ``run_job``
returns a plain JSON-serialisable JobResult (see docs/ARCHITECTURE.md) and emits events as trials start, report
epochs and finish.
"""

from __future__ import annotations

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

from jobs.plan import evaluation_options, plan_trials, resolve_trial, tpe_space
from jobs.results import CHECKPOINT_SCORE, METRICS_JSON, SELECTION_SCORE, ResultCollector, keep_checkpoints_setting
from jobs.spec import TRIAL_DRIVER_CPU, JobSpec

__all__ = ["asha_grace_period", "make_search_alg", "run_job"]

logger = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any]], None]


def asha_grace_period(spec: JobSpec) -> int:
    """ASHA's grace period: the spec's, but never before the latest re-balancing start (DRW / IB) + 1."""
    return min(spec.train.epochs, max(spec.tune.grace_period or 1, spec.rebalancing_start() + 1))


def dataset_meta(spec: JobSpec) -> dict[str, Any]:
    """Name, fingerprint, class names/counts and shot groups of the spec's training set, and the sizes of its
    validation and test splits (loads the data; the fingerprint covers the val/test partition)."""
    from jobs.train import split_size, trial_data
    from lt_core.metrics import shot_groups

    params = spec.dataset.model_dump()
    name = params["name"]
    data = trial_data(params, evaluation_options(spec))
    return {
        "name": name,
        "fingerprint": data.fingerprint,
        "val_size": None if data.val is None else split_size(data.val),
        "test_size": split_size(data.test),
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
        "trial": resolve_trial(config).model_dump(mode="json"),  # validated again where a worker receives it
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
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # Ray's static types are Train V1's
            # controller_failure_limit: Train V2's (the default in Ray 2.60); the static types are V1's
            failure_config=ray.train.FailureConfig(  # type: ignore[call-arg]
                max_failures=scaling["max_failures"], controller_failure_limit=2
            ),
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
                        "branch": t.branch,
                        "branch_index": t.branch_index,
                        "is_control": t.is_control,
                        "config": t.config,
                        "config_id": t.config_id,
                        "seed": t.train.seed,
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
_EventCallback: Any = None
_DatasetStopper: Any = None


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
        local = tuner._local_tuner
        if local is None:  # a local Tuner always has one
            raise RuntimeError(f"the experiment at {path} restored without a local tuner")
        restored = local.get_run_config()
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
            if resolve_trial(trial.config).is_control:
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
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    search_alg: Searcher = OptunaSearch(
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
