"""One trial: a thin (Ray Train) shell over ``lt_core.engine``.

``run_trial`` is plain PyTorch: it builds the dataset, counts the classes in this worker's shard and all-reduces
the counts (when ``torch.distributed`` is initialised), so every worker builds the identical frequency-dependent
loss from the global counts; then ``lt_core.engine.fit`` trains (``FitHooks``: this worker's shard, the wrapped
model, the all-reduce), evaluates on the full test set (each worker a shard, confusion matrices all-reduced) and
calls ``TrialReporter`` once per epoch, which reports, with a checkpoint when ``CheckpointPolicy`` says so.

``train_loop_per_worker`` is the Ray Train entry point: it only supplies the Ray touch-points, marked ``[ray n]``.
Without them ``run_trial`` runs on one CPU, which is how it is unit-tested.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from cachetools import LRUCache
from torch import Tensor, nn
from torch.utils.data import Dataset

from jobs.plan import EvaluationOptions, TrialConfig
from jobs.results import CHECKPOINT_SCORE, METRICS_JSON, SELECTION_SCORE, VAL_PREFIX, is_better
from lt_core.datasets import LTData, load_dataset, with_validation
from lt_core.engine import EpochEnd, FitConfig, FitHooks, fit, scalar_metrics, shard_indices
from lt_core.inference import make_manifest

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrialContext:
    """Where a trial runs: its rank, the world size, the device, and how it reports."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | str = "cpu"
    # report(metrics, checkpoint_dir | None): called by every rank each epoch; checkpoint_dir only on rank 0.
    report: Callable[[dict[str, Any], str | None], None] | None = None
    resume_dir: str | None = None
    prepare_model: Callable[[nn.Module], nn.Module] | None = None
    # When a report carries a checkpoint: with no metric, every epoch. With one, the epochs where it improved (the
    # trial's best so far), the last epoch, and any epoch ``checkpoint_interval_s`` after the previous checkpoint,
    # which bounds what a retry after a failure runs again.
    checkpoint_metric: str | None = None
    checkpoint_mode: str = "max"
    checkpoint_interval_s: float = 60.0
    # bit-identical CUDA runs and resumes (no TF32, no cudnn.benchmark); see lt_core.engine.configure_device
    deterministic: bool = False


def fit_config(trial: TrialConfig) -> FitConfig:
    """The engine's config for a planned trial (see ``jobs.plan``)."""
    model_params = dict(trial.model_params)
    if trial.normalized is not None:
        model_params["normalized"] = trial.normalized
    return FitConfig(
        model=trial.model,
        model_params=model_params,
        loss=trial.loss,
        loss_params=dict(trial.loss_params),
        loss_start_epoch=trial.loss_start_epoch,
        reweighting=trial.reweighting.scheme,
        reweighting_beta=trial.reweighting.beta,
        reweighting_start_epoch=trial.reweighting.start_epoch,
        **trial.train.model_dump(),
    )


_DATASET_CACHE_SIZE = 2
# Per process, used by the one trial a worker runs at a time (no lock): the most recently used are kept.
_DATASETS: LRUCache[str, LTData] = LRUCache(maxsize=_DATASET_CACHE_SIZE)
_SPLITS: LRUCache[str, LTData] = LRUCache(maxsize=_DATASET_CACHE_SIZE)


def _dataset_key(dataset: dict[str, Any]) -> str:
    """The cache key of a dataset spec: its parameters, plus size and mtime of every file it names."""
    files: dict[str, tuple[int, int] | None] = {}
    for value in dataset.values():
        if isinstance(value, str) and ("/" in value or "\\" in value):
            try:
                st = Path(value).stat()
                files[value] = (st.st_size, st.st_mtime_ns)
            except OSError:
                files[value] = None
    return json.dumps([dataset, files], sort_keys=True, default=str)


def _cached(cache: LRUCache[str, LTData], key: str, make: Callable[[], LTData]) -> LTData:
    """``cache[key]``, made by ``make()`` when absent (and then kept in place of the least recently used)."""
    value = cache.get(key)
    if value is None:
        value = cache[key] = make()
    return value


def cached_dataset(dataset: dict[str, Any], key: str | None = None) -> LTData:
    """``load_dataset`` with a small per-process cache, so the trials a reused worker runs load the data once.

    Loaders are deterministic functions of their parameters (and of the files they read: a changed file is a new
    key). The cached ``LTData`` is shared read-only: trials index it and never write to it. ``key`` is
    ``_dataset_key(dataset)`` when the caller has it already.
    """
    return _cached(
        _DATASETS,
        key or _dataset_key(dataset),
        lambda: load_dataset(dataset["name"], **{k: v for k, v in dataset.items() if k != "name"}),
    )


def trial_data(dataset: dict[str, Any], evaluation: EvaluationOptions | None = None) -> LTData:
    """The trial's data: the cached dataset, with its validation split when the trial selects on validation.

    ``evaluation`` (a planned trial's, see ``jobs.plan``): ``split`` (selection on validation), ``val_fraction`` and
    ``seed`` (the dataset's, so every trial of a job, every repeat included, gets the same split). A dataset with its
    own validation split keeps it either way. A split shares the cached data's tensors (it copies only the test rows).
    """
    key = _dataset_key(dataset)
    data = cached_dataset(dataset, key)
    evaluation = evaluation or EvaluationOptions()
    if not (evaluation.split or data.val is not None):
        return data
    fraction, seed = evaluation.val_fraction, evaluation.seed
    return _cached(_SPLITS, "split:" + json.dumps([key, fraction, seed]), lambda: with_validation(data, fraction, seed))


def split_size(split: Dataset[Any]) -> int:
    """The number of items of a split: every ``LTData`` split is sized (torch's ``Dataset`` type does not say so)."""
    return len(cast(Sized, split))


def global_class_counts(data: LTData, rank: int, world_size: int, device: torch.device | str = "cpu") -> Tensor:
    """Count the classes of this worker's shard and all-reduce them (sum) across workers; (K,) int64 on the CPU.

    The all-reduce runs on ``device`` (the trial's): ``TorchTrainer(use_gpu=True)`` builds an NCCL-only process
    group, which refuses CPU tensors.
    """
    idx = torch.tensor(shard_indices(len(data.train_targets), rank, world_size), dtype=torch.long)
    counts = torch.bincount(data.train_targets[idx], minlength=data.num_classes).to(torch.long)
    _all_reduce([counts], world_size, device)
    return counts


def _all_reduce(tensors: list[Tensor], world_size: int, device: torch.device | str = "cpu") -> None:
    """Sum each tensor across workers, in place, with the collective on ``device``.

    A tensor elsewhere goes through a copy on ``device`` and back: the process group of a GPU trial is NCCL's,
    which takes device tensors only (a CPU tensor fails with "No backend type associated with device type cpu").
    """
    if not (dist.is_available() and dist.is_initialized() and world_size > 1):
        return
    device = torch.device(device)
    for t in tensors:
        if t.device.type == device.type:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        else:
            on_device = t.to(device)
            dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
            t.copy_(on_device)


def run_trial(trial: TrialConfig, dataset: dict[str, Any], ctx: TrialContext | None = None) -> list[dict]:
    """Train one planned trial on ``dataset`` (``{"name": ..., **params}``); returns the history (all ranks).

    The loop is ``lt_core.engine.fit``'s; this adds the job's parts: the all-reduced class counts and their check,
    the per-epoch report (``SELECTION_SCORE``, ``CHECKPOINT_SCORE``) and the checkpoints (with the model's manifest)
    that ``CheckpointPolicy`` asks for, written by rank 0.
    """
    ctx = ctx or TrialContext()
    cfg = fit_config(trial)
    evaluation = trial.evaluation
    data = trial_data(dataset, evaluation)
    counts = global_class_counts(data, ctx.rank, ctx.world_size, ctx.device)
    if not torch.equal(counts, data.class_counts):
        raise RuntimeError(f"all-reduced class counts {counts.tolist()} != dataset counts {data.class_counts.tolist()}")
    reporter = TrialReporter(ctx, evaluation, cfg, data)
    hooks = FitHooks(
        rank=ctx.rank,
        world_size=ctx.world_size,
        prepare_model=ctx.prepare_model,  # [ray 1] DDP + device
        reduce=(lambda tensors: _all_reduce(tensors, ctx.world_size, ctx.device)) if ctx.world_size > 1 else None,
        start=reporter.start,
        report=reporter.report if ctx.report is not None else None,
    )
    return fit(
        cfg,
        data,
        device=ctx.device,
        deterministic=ctx.deterministic,  # TF32 + cudnn.benchmark on CUDA unless set
        resume_from=None if ctx.resume_dir is None else Path(ctx.resume_dir) / CHECKPOINT_FILE,  # worker restart
        # the post-hoc variant is chosen on validation by the job's metric (without its val_ prefix)
        posthoc_metric=(evaluation.metric or "balanced_accuracy").removeprefix(VAL_PREFIX),
        posthoc_mode=evaluation.mode,
        hooks=hooks,
    )


class TrialReporter:
    """A trial's report after each epoch (``FitHooks.report``): the payload, and a checkpoint when it is due.

    Every rank reports every epoch (Ray Train expects a report from each worker); the checkpoint, when
    ``CheckpointPolicy`` asks for one, is written by rank 0 only, into a folder that ``TrialContext.report`` hands
    to Ray before it is deleted.
    """

    def __init__(self, ctx: TrialContext, evaluation: EvaluationOptions, cfg: FitConfig, data: LTData) -> None:
        self.ctx, self.evaluation, self.cfg, self.data = ctx, evaluation, cfg, data
        self.policy = CheckpointPolicy(ctx, [])
        self.score = SelectionScore(evaluation, [])

    def start(self, history: list[dict[str, Any]]) -> None:
        """Before the first epoch: a resumed trial's best so far is in its checkpoint's history."""
        self.policy = CheckpointPolicy(self.ctx, history)
        self.score = SelectionScore(self.evaluation, history)

    def report(self, end: EpochEnd) -> None:
        if self.ctx.report is None:  # nothing to report to (run_trial then installs no report hook)
            return
        metrics, mode = end.metrics, self.evaluation.mode
        payload = report_payload(metrics) | {
            SELECTION_SCORE: self.score.update(metrics),
            CHECKPOINT_SCORE: checkpoint_score(metrics, self.evaluation.metric, mode),
        }
        if not self.policy.due(metrics, last=end.last) or self.ctx.rank != 0:
            self.ctx.report(payload, None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            manifest = make_manifest(cfg=self.cfg, data=self.data, metrics=metrics, class_counts=self.data.class_counts)
            end.save(Path(tmp) / CHECKPOINT_FILE, {"manifest": manifest})
            self.ctx.report(payload, tmp)  # [ray 2] report with a checkpoint


_TIE_BREAK = 1e-12


def checkpoint_score(metrics: dict[str, Any], metric: str | None, mode: str = "max") -> float:
    """The epoch's ``CHECKPOINT_SCORE``: its ``metric``, nudged by ``1e-12 * epoch`` towards worse (NaN without it)."""
    value = metrics.get(metric) if metric else None
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return float("nan")
    nudge = _TIE_BREAK * int(metrics.get("epoch", 0))
    return float(value) - nudge if mode == "max" else float(value) + nudge


class BestSoFar:
    """The best value of one metric over the epochs seen so far (``is_better`` under ``mode``); None before any."""

    def __init__(self, metric: str | None, mode: str = "max", history: Iterable[dict[str, Any]] = ()) -> None:
        self.metric, self.mode = metric, mode
        self.best: float | None = None
        for h in history:  # resumed: the epochs before are in the checkpoint's history
            self.update(h)

    def value(self, metrics: dict[str, Any]) -> float | None:
        """This epoch's value of the metric (None without a metric or without the value)."""
        return metrics.get(self.metric) if self.metric else None

    def update(self, metrics: dict[str, Any]) -> bool:
        """Take one epoch's metrics; whether its value is the new best."""
        value = self.value(metrics)
        if is_better(value, self.best, self.mode):
            self.best = value
            return True
        return False


class SelectionScore:
    """The trial's selection value so far, which Tune's scheduler and searcher compare (``SELECTION_SCORE``).

    With ``evaluation.epoch`` "best" it is the best value of the selection metric so far (the epoch the trial would
    report if it stopped now), with "last" the current epoch's. Without a metric (a plain ``run_trial`` call) it is
    NaN. A resumed trial starts from the checkpoint's history.
    """

    def __init__(self, evaluation: EvaluationOptions, history: list[dict[str, Any]]) -> None:
        self.last = evaluation.epoch == "last"
        self.tracker = BestSoFar(evaluation.metric, evaluation.mode, history)

    def update(self, metrics: dict[str, Any]) -> float:
        self.tracker.update(metrics)
        value = self.tracker.value(metrics) if self.last else self.tracker.best
        return float("nan") if value is None else float(value)


class CheckpointPolicy:
    """Which epochs write a checkpoint (see ``TrialContext``): the same answer on every rank, from the same metrics.

    Writing one costs a ``torch.save`` and a copy into Ray's storage; on small data that is as long as the epoch.
    """

    def __init__(self, ctx: TrialContext, history: list[dict[str, Any]]) -> None:
        self.tracker = BestSoFar(ctx.checkpoint_metric, ctx.checkpoint_mode, history)
        self.interval_s = ctx.checkpoint_interval_s
        self.last_write = time.monotonic()

    def due(self, metrics: dict[str, Any], *, last: bool) -> bool:
        """Whether this epoch's report carries a checkpoint."""
        improved = self.tracker.update(metrics)
        now = time.monotonic()
        if self.tracker.metric is None or improved or last or now - self.last_write >= self.interval_s:
            self.last_write = now
            return True
        return False


def report_payload(metrics: dict[str, Any]) -> dict[str, Any]:
    """Scalars at the top level (for Tune's searcher and scheduler), the full dict as JSON beside them."""
    out: dict[str, Any] = {k: (float("nan") if v is None else v) for k, v in scalar_metrics(metrics).items()}
    out[METRICS_JSON] = json.dumps(metrics)
    return out


def checkpoint_options(config: dict[str, Any]) -> dict[str, Any]:
    """The ``TrialContext`` checkpoint fields from a trial config's optional ``checkpoint`` section."""
    options = config.get("checkpoint") or {}
    return {f"checkpoint_{k}": v for k, v in options.items() if k in ("metric", "mode", "interval_s")}


def _torch_threads(config: dict[str, Any]) -> None:
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))  # one intra-op thread per CPU the worker was given


def trial_in_process(config: dict[str, Any]) -> None:
    """A single-worker trial in the Ray Tune trial's own process: no Train controller, no worker group.

    Tune reuses the process for the next trial (``reuse_actors``), so torch is imported and the dataset loaded
    (``cached_dataset``) once per process, not once per trial. It reports with ``ray.tune.report`` and resumes from
    ``ray.tune.get_checkpoint()`` when Tune retries it after a failure.
    """
    import ray
    import ray.tune

    _torch_threads(config)
    gpu_ids = ray.get_gpu_ids()  # Ray sets CUDA_VISIBLE_DEVICES to the GPU (or GPU share) of this trial
    device = torch.device("cuda", 0) if gpu_ids and torch.cuda.is_available() else torch.device("cpu")
    report = _reporter(ray.tune)  # [ray 4]
    trial = TrialConfig.model_validate(config["trial"])  # the trial as the driver sent it (its JSON): checked here

    def run(resume_dir: str | None) -> None:
        ctx = TrialContext(device=device, report=report, resume_dir=resume_dir, **checkpoint_options(config))
        run_trial(trial, config["dataset"], ctx)

    _resume(ray.tune.get_checkpoint(), run)  # [ray 3] a checkpoint when Tune retries the trial


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (one call per DDP worker)."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    _torch_threads(config)
    report = _reporter(ray.train)  # [ray 4]
    trial = TrialConfig.model_validate(config["trial"])  # the trial as the driver sent it (its JSON): checked here

    def run(resume_dir: str | None) -> None:
        ctx = TrialContext(
            rank=context.get_world_rank(),
            world_size=context.get_world_size(),
            device=ray.train.torch.get_device(),  # [ray 5]
            report=report,
            resume_dir=resume_dir,
            prepare_model=ray.train.torch.prepare_model,  # [ray 6]
            **checkpoint_options(config),
        )
        run_trial(trial, config["dataset"], ctx)

    _resume(ray.train.get_checkpoint(), run)  # [ray 3] a checkpoint after a worker failure


def _reporter(api: Any) -> Callable[[dict[str, Any], str | None], None]:
    """``TrialContext.report`` through ``ray.tune`` or ``ray.train`` (the same ``report``/``Checkpoint`` pair)."""

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = api.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        api.report(metrics, checkpoint=checkpoint)

    return report


def _resume(checkpoint: Any, run: Callable[[str | None], None]) -> None:
    """``run(None)`` for a fresh start, else ``run(folder)`` with the checkpoint's files."""
    if checkpoint is None:
        run(None)
    else:
        with checkpoint.as_directory() as path:
            run(path)
