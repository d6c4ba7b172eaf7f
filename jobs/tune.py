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

``run_job`` returns a plain JSON-serialisable JobResult (see docs/ARCHITECTURE.md) and emits events as trials
start, report epochs and finish.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from jobs.results import ResultCollector
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
from jobs.train import METRICS_JSON

logger = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any]], None]
TRAIN_SEARCHABLE = ("batch_size", "optimizer", "lr", "momentum", "weight_decay")
TRAIN_FIXED = ("epochs", "schedule", "milestones", "lr_decay", "warmup_epochs", "seed")


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


def _assemble(spec: JobSpec, index: int | None, values: dict[str, dict[str, Any]], sample: int) -> dict[str, Any]:
    branch = spec.losses[index] if index is not None else None
    rw = branch.reweighting if branch is not None and branch.reweighting is not None else spec.reweighting
    train = {k: getattr(spec.train, k) for k in TRAIN_FIXED} | values["train"]
    train["milestones"] = list(train["milestones"])
    train["seed"] = spec.train.seed + sample
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
        "config": searched | {"reweighting": rw_dict["scheme"] + ("-drw" if rw_dict["start_epoch"] else "")},
    }


def control_trial(spec: JobSpec) -> dict[str, Any]:
    """The plain cross-entropy control: the same model and schedule, shared train domains at their centre."""
    values = {
        s: {k: center_value(v) if is_domain(v) else v for k, v in d.items()} for s, d in _sections(spec, None).items()
    }
    return _assemble(spec, None, values, 0)


def plan_trials(spec: JobSpec) -> list[dict[str, Any]]:
    """Every trial of a random/grid search, control first; deterministic for a given ``tune.seed``."""
    rng = np.random.default_rng(spec.tune.seed)
    grid_choices = spec.tune.search == "grid"
    trials = []
    if spec.tune.control:
        trials.append(control_trial(spec))
    for index in range(len(spec.losses)):
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
                trials.append(_assemble(spec, index, values, sample))
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

    A picklable callable (Tune checkpoints its searcher). Tune asks for suggestions from its one driver thread.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.control_pending = spec.tune.control

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
        return {"trial": _assemble(spec, index, values, 0)}


def tpe_space(spec: JobSpec) -> TPESpace:
    """The conditional define-by-run space for TPE (see ``TPESpace``)."""
    return TPESpace(spec)


def asha_grace_period(spec: JobSpec) -> int:
    """ASHA's grace period: the spec's, but never before the latest re-balancing start (DRW / IB) + 1."""
    return min(spec.train.epochs, max(spec.tune.grace_period or 1, spec.rebalancing_start() + 1))


def dataset_meta(spec: JobSpec) -> dict[str, Any]:
    """Name, fingerprint, class names/counts and shot groups of the spec's training set (loads the data)."""
    from lt_core.datasets import load_dataset
    from lt_core.metrics import shot_groups

    params = spec.dataset.model_dump()
    name = params.pop("name")
    data = load_dataset(name, **params)
    return {
        "name": name,
        "fingerprint": data.fingerprint,
        "class_names": list(data.class_names),
        "class_counts": data.class_counts.tolist(),
        "num_classes": data.num_classes,
        "shot_groups": shot_groups(data.class_counts),
    }


# --------------------------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------------------------
def _trial_driver(config: dict[str, Any], job: dict[str, Any]) -> None:
    """One Tune trial: build and fit a TorchTrainer (Train V2 + Tune)."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from jobs.train import train_loop_per_worker

    scaling = job["scaling"]
    gpus = scaling["gpus"]
    resources = {"CPU": scaling["cpus_per_worker"]} | ({"GPU": gpus} if gpus else {})
    trial_name = ray.tune.get_context().get_trial_name()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "trial": config["trial"],
            "dataset": job["dataset"],
            "threads": max(1, int(scaling["cpus_per_worker"])),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling["num_workers"], use_gpu=scaling["use_gpu"], resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"{job['experiment']}-{trial_name}",
            storage_path=job["storage_path"],
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=scaling["max_failures"], controller_failure_limit=2),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def _make_callback(collector: ResultCollector, emit: EventSink, epochs: int):
    from ray.tune import Callback

    global _EventCallback
    if _EventCallback is None:

        class EventCallback(Callback):
            """Turns Tune's trial life-cycle into job events (runs in the job driver process)."""

            def __init__(self, collector: ResultCollector, emit: EventSink, epochs: int) -> None:
                self.collector, self.emit, self.epochs = collector, emit, epochs

            # The Tuner pickles its callbacks for Tuner.restore; the sink (HTTP clients, locks) stays out of that.
            def __getstate__(self) -> dict:
                return {}

            def on_trial_start(self, iteration, trials, trial, **info):
                t = trial.config["trial"]
                self.emit(
                    {
                        "type": "trial_started",
                        "trial_id": trial.trial_id,
                        "branch": t["branch"],
                        "branch_index": t["branch_index"],
                        "is_control": t["is_control"],
                        "config": t["config"],
                    }
                )

            def on_trial_result(self, iteration, trials, trial, result, **info):
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
                error = trial.get_error()
                self.emit(
                    {
                        "type": "trial_finished",
                        "trial_id": trial.trial_id,
                        "status": "failed",
                        "error": _short_error(str(error) if error else "trial failed"),
                    }
                )

        EventCallback.__qualname__ = EventCallback.__name__ = "_EventCallback"
        _EventCallback = EventCallback
    return _EventCallback(collector, emit, epochs)


# Defined on first use (it subclasses a Ray class, and this module must import without Ray).
_EventCallback = None


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
        # The restored run config's callbacks were pickled without their sink (EventCallback.__getstate__).
        tuner._local_tuner.get_run_config().callbacks = run_config.callbacks
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
        """ASHA that never stops the control trial (every gain is measured against it)."""

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


def run_job(
    spec: JobSpec | dict[str, Any],
    *,
    storage_path: str | os.PathLike[str],
    on_event: EventSink | None = None,
    ray_address: str | None = None,
    experiment_name: str | None = None,
    resume: bool = False,
    prior_events: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Run the job's search on Ray and return the JobResult (see docs/ARCHITECTURE.md).

    Connects to ``ray_address`` (or ``RAY_ADDRESS``, or starts a local Ray) when Ray is not initialised yet.
    ``on_event`` receives trial started / epoch / trial finished events as they happen, from Tune's driver
    thread; it must not raise (errors are logged and ignored so a sink can never stop a search).

    ``resume``: continue the experiment ``experiment_name`` left in ``storage_path`` by a run that was lost (its Ray
    cluster died): finished trials are kept, unfinished and errored ones resume from their last checkpoints
    (``_tuner``). ``prior_events`` are the events that run reported; they are folded into the result, and an event
    seen before (a resumed trial starting again) is not emitted twice. With no saved experiment state it starts
    over.
    """
    import ray
    from ray import tune

    spec = spec if isinstance(spec, JobSpec) else JobSpec.model_validate(spec)
    storage = str(Path(storage_path).expanduser().resolve())
    Path(storage).mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(address=ray_address, log_to_driver=False, configure_logging=False)

    name = experiment_name or f"{spec.name.replace(' ', '_')}-{int(time.time())}"
    # Resume what Tune saved; without its state (lost before the first save) the search starts over, afresh.
    resume = resume and tune.Tuner.can_restore(str(Path(storage) / name))
    collector = ResultCollector(spec, dataset_meta(spec))
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

    job = {
        "dataset": spec.dataset.model_dump(),
        "scaling": spec.scaling.model_dump() | {"gpus": spec.scaling.gpus},
        "storage_path": storage,
        "experiment": name,
    }
    trainable = tune.with_resources(tune.with_parameters(_trial_driver, job=job), {"CPU": TRIAL_DRIVER_CPU})
    if spec.tune.search == "tpe":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(
            space=tpe_space(spec),
            metric=spec.tune.metric,
            mode=spec.tune.resolved_mode,
            sampler=TPESampler(seed=spec.tune.seed, n_startup_trials=max(2, len(spec.losses))),
        )
        param_space: dict[str, Any] = {}
        num_samples = spec.trial_count()
    else:
        search_alg = None
        param_space = {"trial": tune.grid_search(plan_trials(spec))}
        num_samples = 1

    tuner = _tuner(
        trainable,
        resume=resume,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=spec.tune.metric,
            mode=spec.tune.resolved_mode,
            num_samples=num_samples,
            max_concurrent_trials=spec.tune.max_concurrent_trials,
            scheduler=_make_scheduler(spec),
            search_alg=search_alg,
            trial_name_creator=lambda t: f"trial_{t.trial_id}",
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[_make_callback(collector, emit, spec.train.epochs)],
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=0,
        ),
    )
    tuner.fit()
    return collector.result()
