"""One trial: a thin (Ray Train) shell over ``lt_core.engine``.

``run_trial`` is plain PyTorch: it builds the dataset, takes this worker's shard, counts the classes in that
shard and all-reduces the counts (when ``torch.distributed`` is initialised), so every worker builds the
identical frequency-dependent loss from the global counts; it trains with ``lt_core.engine``, evaluates on the
full test set (each worker a shard, confusion matrices all-reduced) and reports once per epoch with a checkpoint.

``train_loop_per_worker`` is the Ray Train entry point: it only supplies the Ray touch-points, marked ``[ray n]``.
Without them ``run_trial`` runs on one CPU, which is how it is unit-tested.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from jobs.plan import EvaluationOptions, TrialConfig
from jobs.results import CHECKPOINT_SCORE, METRICS_JSON, SELECTION_SCORE, VAL_PREFIX, is_better
from lt_core.datasets import LTData, load_dataset, with_validation
from lt_core.engine import (
    EpochShardSampler,
    FitConfig,
    LossSchedule,
    build_optimizer,
    configure_device,
    eval_batch_size,
    is_lazy,
    load_checkpoint,
    loader_options,
    make_grad_scaler,
    run_epoch,
    save_checkpoint,
    scalar_metrics,
    seed_everything,
    shard_indices,
)
from lt_core.inference import make_manifest
from lt_core.losses import LOSSES
from lt_core.models import create_model

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


_DATASETS: dict[str, LTData] = {}
_SPLITS: dict[str, LTData] = {}
_DATASET_CACHE_SIZE = 2


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


def _cached(cache: dict[str, LTData], key: str, make: Callable[[], LTData]) -> LTData:
    """``cache[key]``, made by ``make()`` when absent; the ``_DATASET_CACHE_SIZE`` most recently used are kept."""
    value = cache.pop(key, None)
    if value is None:
        value = make()
    cache[key] = value  # most recently used last
    while len(cache) > _DATASET_CACHE_SIZE:
        cache.pop(next(iter(cache)))
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


def split_size(split: Dataset) -> int:
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


def train_shard(data: LTData, rank: int, world_size: int, seed: int) -> tuple[Any, EpochShardSampler]:
    """This worker's training set and sampler.

    In-memory data: the whole set, each epoch's shuffle split across workers. Lazy (file) data: this worker's fixed
    shard ``shard_indices(N, rank, world_size)`` (the one ``global_class_counts`` counts), shuffled within itself
    each epoch and padded to the longest shard's length (equal steps on every rank), so a rank only ever opens the
    files of its shard (and each node's page cache holds only those).
    """
    size = split_size(data.train)
    if not is_lazy(data.train) or world_size == 1:
        return data.train, EpochShardSampler(size, rank=rank, world_size=world_size, seed=seed)
    shard = Subset(data.train, shard_indices(size, rank, world_size))
    if len(shard) == 0:
        raise ValueError(f"{size} training samples cannot be sharded across {world_size} workers")
    longest = -(-size // world_size)
    return shard, EpochShardSampler(len(shard), seed=seed * 1_000_003 + rank, num_samples=longest)


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
    """Train one planned trial on ``dataset`` (``{"name": ..., **params}``); returns the history (all ranks)."""
    ctx = ctx or TrialContext()
    cfg = fit_config(trial)
    seed_everything(cfg.seed)
    configure_device(ctx.device, deterministic=ctx.deterministic)  # TF32 + cudnn.benchmark on CUDA
    evaluation = trial.evaluation
    data = trial_data(dataset, evaluation)
    if LOSSES[cfg.loss].needs_class_counts or cfg.reweighting != "none":
        data.require_all_classes()

    counts = global_class_counts(data, ctx.rank, ctx.world_size, ctx.device)
    if not torch.equal(counts, data.class_counts):
        raise RuntimeError(f"all-reduced class counts {counts.tolist()} != dataset counts {data.class_counts.tolist()}")

    model: nn.Module = create_model(cfg.model, data.num_classes, data.input_shape, **cfg.model_params)
    model = ctx.prepare_model(model) if ctx.prepare_model else model.to(ctx.device)  # [ray 1] DDP + device
    optimizer = build_optimizer(model, cfg)
    scaler = make_grad_scaler(cfg.precision, ctx.device)  # fp16 only; its loss scale is checkpointed
    history: list[dict[str, Any]] = []
    start = 0
    if ctx.resume_dir is not None:  # worker restart: continue from the last reported checkpoint
        state = load_checkpoint(Path(ctx.resume_dir) / CHECKPOINT_FILE, model, optimizer)
        start, history = int(state["epoch"]), list(state["history"])
        if scaler is not None and (state.get("extra") or {}).get("grad_scaler"):
            scaler.load_state_dict(state["extra"]["grad_scaler"])

    train_set, sampler = train_shard(data, ctx.rank, ctx.world_size, cfg.seed)
    # pinned memory on CUDA; worker processes for per-item work (see lt_core.engine.loader_options)
    workers = {"num_workers": cfg.loader_workers}
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, **loader_options(train_set, ctx.device, **workers)
    )
    test_shard = Subset(data.test, shard_indices(split_size(data.test), ctx.rank, ctx.world_size))
    test_loader = DataLoader(
        test_shard, batch_size=eval_batch_size(test_shard, cfg), **loader_options(test_shard, ctx.device, **workers)
    )
    val_loader = None
    if data.val is not None:
        val_shard = Subset(data.val, shard_indices(split_size(data.val), ctx.rank, ctx.world_size))
        val_loader = DataLoader(
            val_shard, batch_size=eval_batch_size(val_shard, cfg), **loader_options(val_shard, ctx.device, **workers)
        )
    schedule = LossSchedule(cfg, counts, ctx.device)
    reduce = (lambda tensors: _all_reduce(tensors, ctx.world_size, ctx.device)) if ctx.world_size > 1 else None
    policy = CheckpointPolicy(ctx, history)
    score = SelectionScore(evaluation, history)
    # the post-hoc variant is chosen on validation by the job's metric (without its val_ prefix)
    posthoc_metric = (evaluation.metric or "balanced_accuracy").removeprefix(VAL_PREFIX)

    for epoch in range(start, cfg.epochs):
        metrics = run_epoch(
            model,
            optimizer,
            cfg,
            schedule,
            sampler,
            train_loader,
            test_loader,
            counts,
            epoch,
            device=ctx.device,
            reduce=reduce,
            val_loader=val_loader,
            scaler=scaler,
            posthoc_metric=posthoc_metric,
            posthoc_mode=evaluation.mode,
        )
        history.append(scalar_metrics(metrics))
        report = report_payload(metrics) | {
            SELECTION_SCORE: score.update(metrics),
            CHECKPOINT_SCORE: checkpoint_score(metrics, evaluation.metric, evaluation.mode),
        }
        if ctx.report is None:
            continue
        if not policy.due(metrics, last=epoch + 1 == cfg.epochs):
            ctx.report(report, None)
        elif ctx.rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                manifest = make_manifest(cfg=cfg, data=data, metrics=metrics, class_counts=counts)
                extra = {"manifest": manifest}
                if scaler is not None:
                    extra["grad_scaler"] = scaler.state_dict()
                save_checkpoint(Path(tmp) / CHECKPOINT_FILE, model, optimizer, epoch + 1, history, extra)
                ctx.report(report, tmp)  # [ray 2] report with a checkpoint
        else:
            ctx.report(report, None)
    return history


_TIE_BREAK = 1e-12


def checkpoint_score(metrics: dict[str, Any], metric: str | None, mode: str = "max") -> float:
    """The epoch's ``CHECKPOINT_SCORE``: its ``metric``, nudged by ``1e-12 * epoch`` towards worse (NaN without it)."""
    value = metrics.get(metric) if metric else None
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return float("nan")
    nudge = _TIE_BREAK * int(metrics.get("epoch", 0))
    return float(value) - nudge if mode == "max" else float(value) + nudge


class SelectionScore:
    """The trial's selection value so far, which Tune's scheduler and searcher compare (``SELECTION_SCORE``).

    With ``evaluation.epoch`` "best" it is the best value of the selection metric so far (the epoch the trial would
    report if it stopped now), with "last" the current epoch's. Without a metric (a plain ``run_trial`` call) it is
    NaN. A resumed trial starts from the checkpoint's history.
    """

    def __init__(self, evaluation: EvaluationOptions, history: list[dict[str, Any]]) -> None:
        self.metric = evaluation.metric
        self.mode = evaluation.mode
        self.last = evaluation.epoch == "last"
        self.best: float | None = None
        for h in history:
            self.update(h)

    def update(self, metrics: dict[str, Any]) -> float:
        value = metrics.get(self.metric) if self.metric else None
        if self.last:
            self.best = value
        elif is_better(value, self.best, self.mode):
            self.best = value
        return float("nan") if self.best is None else float(self.best)


class CheckpointPolicy:
    """Which epochs write a checkpoint (see ``TrialContext``): the same answer on every rank, from the same metrics.

    Writing one costs a ``torch.save`` and a copy into Ray's storage; on small data that is as long as the epoch.
    """

    def __init__(self, ctx: TrialContext, history: list[dict[str, Any]]) -> None:
        self.metric, self.mode, self.interval_s = ctx.checkpoint_metric, ctx.checkpoint_mode, ctx.checkpoint_interval_s
        self.best: float | None = None
        for h in history:  # resumed: the best so far is in the checkpoint's history
            self._improved(h)
        self.last_write = time.monotonic()

    def _improved(self, metrics: dict[str, Any]) -> bool:
        value = metrics.get(self.metric) if self.metric else None
        if is_better(value, self.best, self.mode):
            self.best = value
            return True
        return False

    def due(self, metrics: dict[str, Any], *, last: bool) -> bool:
        """Whether this epoch's report carries a checkpoint."""
        improved = self._improved(metrics)
        now = time.monotonic()
        if self.metric is None or improved or last or now - self.last_write >= self.interval_s:
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
