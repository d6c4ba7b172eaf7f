"""The training engine: one local run of a long-tail classifier on plain PyTorch.

The Ray layer (``jobs.train``) calls ``fit`` with ``FitHooks``; nothing here knows about Ray.

- ``train_one_epoch`` / ``evaluate``: one pass over plain ``DataLoader``s.
- ``LossSchedule``: which criterion an epoch uses. Losses hold no epoch state, so deferred re-weighting (DRW)
  and IB's plain cross-entropy warm-up are chosen here, per epoch.
- ``lr_at``: linear warm-up, then step decay (the CIFAR-LT recipe), cosine or constant, per iteration.
- ``fit``: the only epoch loop. Seeded, reproducible on CPU, checkpoint save/resume (CPU and CUDA RNG states and
  the fp16 loss scale included), a callback per epoch; a run whose loss turns NaN/inf stops with
  ``NonFiniteLossError`` naming the epoch and step. ``FitHooks`` add what one worker of a distributed run needs:
  its data shard (``train_shard``, ``eval_shard``), the wrapped model, reductions, a report per epoch.
- No host sync per training step: the loss is summed on the device and read once per epoch; finiteness is
  flagged on the device and read every ``FINITE_CHECK_EVERY`` steps, after a ``reduce`` across workers, so
  every DDP rank stops at the same check with the same error.
- ``loader_options`` / ``configure_device``: DataLoader settings and CUDA speed flags (TF32, cudnn.benchmark) chosen
  by device; see their docstrings for the defaults and why.
- Mixed precision (``FitConfig.precision``): the forward pass under ``torch.autocast`` (bf16 or fp16, with a
  ``GradScaler`` for fp16); the loss is always computed in float32 on float32 logits and features.
- A dataset's ``batch_transform`` (e.g. image augmentation and normalisation, ``lt_core.datasets.images``) is
  applied to each batch on the device, before the model.

Epochs are 0-based inside the loop (``start_epoch`` semantics: "from this epoch on"); the history and the
callback number them 1-based (``epoch`` = epochs completed), like Ray Tune's ``training_iteration``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler, Subset

from lt_core.losses import LOSSES, class_weights, create_loss
from lt_core.metrics import EvalAccumulator
from lt_core.posthoc import LA_ONLY, POSTHOC_METRICS, PosthocAccumulator, choose, linear_head

__all__ = [
    "CUDA_LOADER_WORKERS",
    "FINITE_CHECK_EVERY",
    "EpochEnd",
    "EpochShardSampler",
    "FitConfig",
    "FitHooks",
    "LossSchedule",
    "NonFiniteLossError",
    "PRECISIONS",
    "autocast",
    "batch_transform",
    "build_optimizer",
    "configure_device",
    "eval_batch_size",
    "eval_shard",
    "evaluate",
    "is_lazy",
    "fit",
    "load_checkpoint",
    "loader_options",
    "lr_at",
    "make_grad_scaler",
    "posthoc_metrics",
    "save_checkpoint",
    "run_epoch",
    "scalar_metrics",
    "seed_everything",
    "shard_indices",
    "train_one_epoch",
    "train_shard",
]


# Steps between two reads of the on-device finiteness flags (each read is one host sync, after a reduce across
# workers): a NaN is caught within this many steps, at the cost of one sync per this many steps.
FINITE_CHECK_EVERY = 50
# DataLoader worker processes on CUDA for datasets that do work per item (augmentation), at most.
CUDA_LOADER_WORKERS = 4
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at epoch {epoch} step {step}; lower the learning rate or check the data")
        self.epoch, self.step, self.value = epoch, step, value


Precision = Literal["fp32", "bf16", "fp16"]
Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "step", "constant"]
Reweighting = Literal["none", "inverse", "effective_number"]
# The choices ``FitConfig`` checks itself: an unknown one would otherwise fall through silently (``build_optimizer``
# to AdamW, ``lr_at`` to a constant rate) or fail far from its cause. Ranges and the rest are the job spec's to check.
_CHOICES: dict[str, tuple[str, ...]] = {
    "precision": get_args(Precision),
    "optimizer": get_args(Optimizer),
    "schedule": get_args(Schedule),
    "reweighting": get_args(Reweighting),
}


@dataclass
class FitConfig:
    """Everything one local run needs (the job spec's trial config, flattened, with concrete values).

    The job spec (``jobs.spec``) validates the values a job's trials get; used alone, ``FitConfig`` refuses only an
    unknown loss and an unknown choice of precision, optimizer, schedule or re-weighting (see ``_CHOICES``).
    """

    model: str = "mlp"
    model_params: dict[str, Any] = field(default_factory=dict)
    loss: str = "ce"
    loss_params: dict[str, Any] = field(default_factory=dict)
    loss_start_epoch: int = 0
    reweighting: Reweighting = "none"
    reweighting_beta: float = 0.9999
    reweighting_start_epoch: int | None = None
    epochs: int = 30
    batch_size: int = 128
    optimizer: Optimizer = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = "cosine"
    milestones: Sequence[int] = ()
    lr_decay: float = 0.1
    warmup_epochs: int = 0
    seed: int = 0
    many_threshold: int = 100
    few_threshold: int = 20
    precision: Precision = "fp32"
    loader_workers: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise KeyError(f"unknown loss {self.loss!r}; known: {sorted(LOSSES)}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (stored in checkpoints)."""
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(cfg: FitConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate at (0-based) ``epoch`` and ``step`` within it: linear warm-up, then the schedule."""
    t = epoch + step / max(steps_per_epoch, 1)
    if cfg.warmup_epochs and t < cfg.warmup_epochs:
        return cfg.lr * (t + 1 / max(steps_per_epoch, 1)) / cfg.warmup_epochs
    if cfg.schedule == "step":
        return cfg.lr * cfg.lr_decay ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * (t - cfg.warmup_epochs) / span))
    return cfg.lr


def build_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """SGD with momentum (and weight decay) or AdamW."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


class LossSchedule:
    """Chooses the criterion for each epoch from the class counts: IB's warm-up and deferred re-weighting.

    - Before ``loss_start_epoch`` the loss is plain cross-entropy (IB's warm-up phase; unweighted).
    - Class weights (``reweighting`` scheme) apply from ``reweighting_start_epoch`` (DRW) or from the start.
    Modules are built once per phase and cached; class statistics become buffers on ``device``.
    """

    def __init__(self, cfg: FitConfig, class_counts: Tensor, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.class_counts = class_counts.detach().to(torch.long).cpu()
        self.device = torch.device(device)
        self._cache: dict[tuple[str, bool], nn.Module] = {}
        self._weights = (
            None
            if cfg.reweighting == "none"
            else class_weights(self.class_counts, scheme=cfg.reweighting, beta=cfg.reweighting_beta).float()
        )

    def phase(self, epoch: int) -> tuple[str, bool]:
        """(loss name, weighted?) at 0-based ``epoch``."""
        name = self.cfg.loss if epoch >= self.cfg.loss_start_epoch else "ce"
        start = self.cfg.reweighting_start_epoch or 0
        weighted = self._weights is not None and epoch >= start and not (name == "ce" and self.cfg.loss != "ce")
        return name, weighted

    def criterion(self, epoch: int) -> tuple[nn.Module, bool]:
        """The loss module for ``epoch`` and whether it needs features."""
        key = self.phase(epoch)
        if key not in self._cache:
            name, weighted = key
            info = LOSSES[name]
            params = self.cfg.loss_params if name == self.cfg.loss else {}
            module = create_loss(
                name,
                class_counts=self.class_counts if info.needs_class_counts else None,
                class_weight=self._weights if weighted else None,
                **params,
            )
            self._cache[key] = module.to(self.device)
        return self._cache[key], LOSSES[key[0]].needs_features


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """A disjoint, covering partition of ``range(n)`` (no padding): class counts summed over shards are exact."""
    return list(range(rank, n, world_size))


class EpochShardSampler(Sampler[int]):
    """A seeded per-epoch shuffle, split across ``world_size`` replicas, every rank the same length.

    The order is repeated until it fills ``ceil(n / world_size) * world_size`` places (as ``DistributedSampler``
    does), so every rank takes the same number of steps for any ``n >= 1``, even ``n < world_size``: unequal step
    counts would deadlock DDP. Reproducible under resume: the order depends only on (seed, epoch), not on RNG state.

    ``num_samples`` overrides the per-rank length (a rank sampling its own fixed shard of a dataset sets it to the
    longest shard's length, so that every rank takes the same number of steps).
    """

    def __init__(
        self,
        n: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        num_samples: int | None = None,
    ) -> None:
        self.n, self.rank, self.world_size, self.seed, self.shuffle = n, rank, world_size, seed, shuffle
        self.epoch = 0
        self.num_samples = math.ceil(n / world_size) if num_samples is None else num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle ``__iter__`` yields."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.num_samples * self.world_size
        if order:  # repeat the whole order as often as needed (padding by at most n would leave ranks short)
            order = (order * math.ceil(total / len(order)))[:total]
        return iter(order[self.rank : total : self.world_size])

    def __len__(self) -> int:
        return self.num_samples


def _unwrap(dataset: Any) -> Any:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _item_transform(dataset: Any) -> Any:
    """The per-item transform of ``dataset`` (through ``Subset`` wrappers), or None."""
    return getattr(_unwrap(dataset), "transform", None)


def batch_transform(dataset: Any) -> Callable[[Tensor], Tensor] | None:
    """The batch transform of ``dataset`` (through ``Subset`` wrappers), run on the device before the model, or None."""
    return getattr(_unwrap(dataset), "batch_transform", None)


def is_lazy(dataset: Any) -> bool:
    """Whether ``dataset`` reads and decodes files per item (``lazy = True``, e.g. ``ImageFiles``)."""
    return bool(getattr(_unwrap(dataset), "lazy", False))


def eval_batch_size(dataset: Any, cfg: FitConfig) -> int:
    """Evaluation batches: at least 512 for in-memory data (fewer steps), the training batch size for decoded files."""
    return cfg.batch_size if is_lazy(dataset) else max(cfg.batch_size, 512)


def autocast(device: torch.device | str, precision: str = "fp32") -> Any:
    """``torch.autocast`` for ``precision`` on ``device`` (disabled for ``"fp32"``)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def make_grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for fp16 (gradients of float16 activations underflow without it); None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_options(dataset: Any, device: torch.device | str, *, num_workers: int | None = None) -> dict[str, Any]:
    """``DataLoader`` keyword arguments for ``dataset`` feeding ``device``.

    - On CUDA, ``pin_memory=True``: ``.to(device, non_blocking=True)`` is then a real asynchronous copy (from
      pageable memory it is synchronous).
    - On CUDA, a dataset that does work per item (it has a ``transform``, e.g. CIFAR's crop and flip, about 5 ms per
      batch of 128 in the main process on a shared 2-core CPU) gets up to ``CUDA_LOADER_WORKERS`` persistent worker
      processes, leaving one CPU of this process's share to the training loop, so batches are prepared while the
      GPU steps. The share is torch's thread count (a Ray trial sets it to ``cpus_per_worker``): raise that to
      feed the loader.
    - Otherwise no worker processes: an in-memory dataset without a transform yields views of one tensor, and
      sending them between processes costs more than producing them; on the CPU the workers would also take cores
      from the training step itself.

    - A lazy dataset (one that opens and decodes a file per item, e.g. images) gets ``min(CUDA_LOADER_WORKERS,
      CPUs of this process's share)`` worker processes on any device: decoding in the training process would stall
      every step.

    ``num_workers`` overrides the choice of worker processes. Augmentation draws from each worker's generator
    (seeded by DataLoader from the main process), so with workers a resumed run augments differently from an
    uninterrupted one; the model, optimizer and sampling order still resume exactly.
    """
    device = torch.device(device)
    if num_workers is None:
        cpus = min(_usable_cpus(), torch.get_num_threads())  # a Ray worker's threads = its cpus_per_worker
        wants_workers = device.type == "cuda" and _item_transform(dataset) is not None
        num_workers = min(CUDA_LOADER_WORKERS, cpus - 1) if wants_workers else 0
        if is_lazy(dataset):
            num_workers = max(1, min(CUDA_LOADER_WORKERS, cpus))
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    options: dict[str, Any] = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
    if num_workers > 0:
        options |= {"persistent_workers": True, "prefetch_factor": 4}
    return options


def configure_device(device: torch.device | str, *, deterministic: bool = False) -> None:
    """Set the process-wide speed flags for a run on ``device``; a no-op unless it is CUDA.

    - TF32 for float32 matmuls (``torch.set_float32_matmul_precision("high")``) and convolutions
      (``cudnn.allow_tf32``, torch's default): about 10 significant bits in the products, sums in float32, several
      times the float32 throughput on Ampere and later.
    - ``cudnn.benchmark=True``: cuDNN times its convolution algorithms once per input shape (the shapes are fixed
      here) and keeps the fastest.
    - ``deterministic=True`` instead: no TF32, ``cudnn.benchmark=False`` and ``cudnn.deterministic=True``, so that
      a run and its resume from a checkpoint compute bit-identical results (slower).
    """
    if torch.device(device).type != "cuda":
        return
    torch.set_float32_matmul_precision("highest" if deterministic else "high")
    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[Any],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    needs_features: bool = False,
    lr_fn: Callable[[int], float] | None = None,
    device: torch.device | str = "cpu",
    reduce: Callable[[list[Tensor]], None] | None = None,
    check_every: int = FINITE_CHECK_EVERY,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns ``train_loss`` (mean per sample), ``lr`` (last), ``samples``.

    ``lr_fn(step)`` sets the learning rate before each step. The loss never leaves the device inside the loop:
    its sum is read once, at the end, and whether it was finite is flagged per step on the device and read every
    ``check_every`` steps and at the end. ``reduce(tensors)`` (a sum across workers, in place) merges the flags of
    all workers before each read, so every worker raises the same ``NonFiniteLossError`` (the first step at which
    any worker's loss was NaN/inf) at the same step; every worker must then run the same number of steps.

    The model runs under ``autocast(device, precision)``; the loss is computed outside it on float32 logits and
    features (log-softmax, margins and class weights need float32's range and precision). With ``scaler`` (fp16)
    the backward pass and the step go through it. The dataset's ``batch_transform`` is applied on the device.
    """
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    model.train()
    device = torch.device(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    # per step of the current window: [loss not finite, loss NaN] (float: summable by any backend's all-reduce)
    flags = torch.zeros(check_every, 2, dtype=torch.float64, device=device)
    seen, lr, first = 0, optimizer.param_groups[0]["lr"], 0
    transform = batch_transform(loader.dataset)
    if precision == "fp16" and scaler is None:
        scaler = make_grad_scaler(precision, device)
    for step, (x, y) in enumerate(loader):
        if lr_fn is not None:
            lr = lr_fn(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        with autocast(device, precision):
            logits, features = model(x)  # (N, K), (N, D)
        # the loss in float32, outside autocast: no-ops for fp32, upcasts of bf16/fp16 activations otherwise
        loss = criterion(logits.float(), y, features=features.float() if needs_features else None)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        value = loss.detach()
        loss_sum += value.double() * y.shape[0]
        flags[step - first, 0] = ~torch.isfinite(value)
        flags[step - first, 1] = torch.isnan(value)
        seen += y.shape[0]
        if step - first + 1 == check_every:
            _raise_if_not_finite(flags, epoch, first, reduce)
            first = step + 1
    _raise_if_not_finite(flags, epoch, first, reduce)  # every worker, even with an empty window: reduces pair up
    return {"train_loss": loss_sum.item() / max(seen, 1), "lr": lr, "samples": seen}


def _raise_if_not_finite(
    flags: Tensor, epoch: int, first_step: int, reduce: Callable[[list[Tensor]], None] | None
) -> None:
    """Merge the window's flags across workers, read them (one host sync) and clear them; raise on a bad step."""
    if reduce is not None:
        reduce([flags])
    window = flags.to("cpu", copy=True)  # a copy also on the CPU, where .cpu() would alias the zeroed flags
    flags.zero_()
    bad = window[:, 0].nonzero()
    if len(bad):
        i = int(bad[0])
        raise NonFiniteLossError(epoch + 1, first_step + i, float("nan") if window[i, 1] > 0 else float("inf"))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[Any],
    num_classes: int,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    posthoc: PosthocAccumulator | None = None,
) -> EvalAccumulator:
    """Accumulate a confusion matrix and calibration statistics over ``loader`` (summable across workers).

    With ``posthoc`` the same logits (and features) also feed the post-hoc grid (``lt_core.posthoc``).
    """
    model.eval()
    acc = EvalAccumulator(num_classes)
    transform = batch_transform(loader.dataset)
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        with autocast(device, precision):
            logits, features = model(x)
        logits = logits.float().cpu()
        acc.update(logits, y.cpu())
        if posthoc is not None:
            posthoc.update(logits, y.cpu(), None if features is None else features.float())
    return acc


def posthoc_metrics(
    test: PosthocAccumulator,
    val: PosthocAccumulator | None,
    class_counts: Tensor,
    *,
    metric: str = "balanced_accuracy",
    mode: str = "max",
    **thresholds: int,
) -> dict[str, Any]:
    """The post-hoc entries of an epoch's metrics: the grids, the chosen variants and their scalar metrics.

    - ``posthoc``: ``{"taus", "test": {method: [row per tau]}, "val": ... | None, "chosen", "chosen_la"}``.
    - The variant is chosen on validation by ``metric`` (``balanced_accuracy`` when the metric is not one of
      ``POSTHOC_METRICS``); without a validation split it is not chosen at all but fixed to logit adjustment at
      tau = 1 (the prior's own scale), ``posthoc_chosen_on: "default"``.
    - Scalars (few: they go into every history row): ``posthoc_method``, ``posthoc_tau``, ``posthoc_chosen_on``,
      ``posthoc_<metric>`` / ``val_posthoc_<metric>`` for the best variant of any method, and ``posthoc_la_tau``,
      ``posthoc_la_<metric>`` / ``val_posthoc_la_<metric>`` for the best logit adjustment alone ("CE + post-hoc LA"
      on the control). The other metrics of every variant are in the grids.
    """
    key = metric if metric in POSTHOC_METRICS else "balanced_accuracy"
    taus = list(test.taus)
    test_grid = test.compute(class_counts, **thresholds)
    val_grid = val.compute(class_counts, **thresholds) if val is not None else None
    if val_grid is not None:
        chosen, chosen_la, on = choose(val_grid, key, mode, taus), choose(val_grid, key, mode, taus, LA_ONLY), "val"
    else:
        chosen = chosen_la = ("logit_adjustment", 1.0)
        on = "default"
    out: dict[str, Any] = {
        "posthoc": {
            "taus": taus,
            "test": test_grid,
            "val": val_grid,
            "metric": key,
            "chosen": {"method": chosen[0], "tau": chosen[1], "chosen_on": on},
            "chosen_la": {"method": chosen_la[0], "tau": chosen_la[1], "chosen_on": on},
        },
        "posthoc_method": chosen[0],
        "posthoc_tau": chosen[1],
        "posthoc_chosen_on": on,
        "posthoc_la_tau": chosen_la[1],
    }
    for prefix, (method, tau) in (("posthoc_", chosen), ("posthoc_la_", chosen_la)):
        i = taus.index(tau)
        out[f"{prefix}{key}"] = test_grid[method][i][key]
        if val_grid is not None:
            out[f"{VAL_PREFIX}{prefix}{key}"] = val_grid[method][i][key]
    return out


VAL_PREFIX = "val_"  # validation metrics sit beside the test metrics under this prefix


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar (history-worthy) entries of a metrics dict: numbers, None and short labels like ``loss_phase``."""
    return {k: v for k, v in metrics.items() if v is None or isinstance(v, (int, float, str))}


def run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: FitConfig,
    schedule: LossSchedule,
    sampler: EpochShardSampler,
    train_loader: DataLoader[Any],
    test_loader: DataLoader[Any],
    class_counts: Tensor,
    epoch: int,
    *,
    device: torch.device | str = "cpu",
    reduce: Callable[[list[Tensor]], None] | None = None,
    val_loader: DataLoader[Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    posthoc: bool = True,
    posthoc_metric: str = "balanced_accuracy",
    posthoc_mode: str = "max",
) -> dict[str, Any]:
    """Train and evaluate one (0-based) ``epoch``; returns the full metrics dict of it (``epoch`` 1-based).

    With ``posthoc`` the evaluation also scores the post-hoc grid (``posthoc_metrics``): the variant is chosen on
    validation by ``posthoc_metric`` (``posthoc_mode``) and reported on test.

    With ``val_loader`` the model is also evaluated on the validation split, and every scalar metric of it is
    added as ``val_<metric>`` (``val_balanced_accuracy``, ...) beside the test metrics under their plain names.

    ``reduce(tensors)`` sums tensors across workers in place (``torch.distributed.all_reduce``); it is called
    with tensors on ``device`` only (NCCL takes no others). With it, the training loss's finiteness flags are
    agreed across workers (see ``train_one_epoch``), each worker evaluates its own shard of the test set and the
    summable evaluation state is reduced, so every worker computes the metrics of the full test set. Evaluation
    uses the unwrapped module: no DDP collectives, since workers may hold test shards of unequal size.
    ``scaler`` (fp16) carries the loss scale from epoch to epoch (see ``make_grad_scaler``).
    """
    t0 = time.perf_counter()
    sampler.set_epoch(epoch)
    criterion, needs_features = schedule.criterion(epoch)
    steps = len(train_loader)
    stats = train_one_epoch(
        model,
        train_loader,
        criterion,
        optimizer,
        epoch=epoch,
        needs_features=needs_features,
        lr_fn=lambda step: lr_at(cfg, epoch, step, steps),
        device=device,
        reduce=reduce,
        precision=cfg.precision,
        scaler=scaler,
    )
    plain = getattr(model, "module", model)
    k = len(class_counts)
    head = linear_head(plain)
    ph_test = PosthocAccumulator(k, class_counts, head) if posthoc else None
    ph_val = PosthocAccumulator(k, class_counts, head) if posthoc and val_loader is not None else None
    acc = evaluate(plain, test_loader, k, device=device, precision=cfg.precision, posthoc=ph_test)
    loss_sum = torch.tensor([stats["train_loss"] * stats["samples"], stats["samples"]], dtype=torch.float64)
    if reduce is not None:  # NCCL reduces device tensors only: move the (small) summable state there and back
        acc, loss_sum = acc.to(device), loss_sum.to(device)
        extra = ph_test.to(device).tensors() if ph_test is not None else []
        reduce([*acc.tensors(), loss_sum, *extra])
        acc, loss_sum = acc.to("cpu"), loss_sum.cpu()
        if ph_test is not None:
            ph_test.to("cpu")
    thresholds = {"many_threshold": cfg.many_threshold, "few_threshold": cfg.few_threshold}
    metrics = acc.compute(class_counts, **thresholds)
    if val_loader is not None:
        val = evaluate(plain, val_loader, k, device=device, precision=cfg.precision, posthoc=ph_val)
        if reduce is not None:
            val = val.to(device)
            reduce([*val.tensors(), *(ph_val.to(device).tensors() if ph_val is not None else [])])
            val = val.to("cpu")
            if ph_val is not None:
                ph_val.to("cpu")
        val_metrics = val.compute(class_counts, **thresholds)
        metrics.update({f"{VAL_PREFIX}{k}": v for k, v in scalar_metrics(val_metrics).items()})
    if ph_test is not None:
        metrics.update(
            posthoc_metrics(ph_test, ph_val, class_counts, metric=posthoc_metric, mode=posthoc_mode, **thresholds)
        )
    metrics.update(
        epoch=epoch + 1,
        train_loss=float(loss_sum[0] / loss_sum[1]),
        lr=stats["lr"],
        epoch_time_s=time.perf_counter() - t0,
        loss_phase=schedule.phase(epoch)[0],
        reported_at=time.time(),
    )
    return metrics


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save model + optimizer + epochs completed + history + RNG states (CPU, CUDA) to ``path`` (atomic rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "module", model)  # unwrap DDP
    state = {
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "history": history,
        "rng": {
            "torch": torch.get_rng_state(),
            # SEQL's masks and dropout on a GPU draw from the CUDA generators: without them a resume diverges
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
        "extra": extra or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` into ``model`` (and ``optimizer``); returns its state."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    getattr(model, "module", model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    rng = state.get("rng")
    if rng:
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            # a checkpoint from more GPUs than this process sees restores those it has (one per Ray worker)
            for index, cuda_state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, index)
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    return state


def train_shard(data: Any, rank: int = 0, world_size: int = 1, seed: int = 0) -> tuple[Any, EpochShardSampler]:
    """This worker's training set and sampler (``data`` an ``LTData``).

    In-memory data: the whole set, each epoch's shuffle split across workers. Lazy (file) data: this worker's fixed
    shard ``shard_indices(N, rank, world_size)``, shuffled within itself each epoch and padded to the longest shard's
    length (equal steps on every rank), so a rank only ever opens the files of its shard (and each node's page cache
    holds only those).
    """
    if not is_lazy(data.train) or world_size == 1:
        return data.train, EpochShardSampler(len(data.train), rank=rank, world_size=world_size, seed=seed)
    shard = Subset(data.train, shard_indices(len(data.train), rank, world_size))
    if len(shard) == 0:
        raise ValueError(f"{len(data.train)} training samples cannot be sharded across {world_size} workers")
    longest = -(-len(data.train) // world_size)
    return shard, EpochShardSampler(len(shard), seed=seed * 1_000_003 + rank, num_samples=longest)


def eval_shard(dataset: Any, rank: int = 0, world_size: int = 1) -> Any:
    """This worker's part of an evaluation split: ``shard_indices`` of it (its summable metrics are reduced)."""
    return dataset if world_size == 1 else Subset(dataset, shard_indices(len(dataset), rank, world_size))


SaveCheckpoint = Callable[[str | os.PathLike[str], dict[str, Any]], Path]


@dataclass(frozen=True)
class EpochEnd:
    """One finished epoch, as ``FitHooks.report`` sees it."""

    epoch: int  # epochs completed (1-based)
    metrics: dict[str, Any]  # the epoch's full metrics (``run_epoch``)
    history: list[dict[str, Any]]  # the scalar metrics of every epoch so far, this one included
    last: bool  # the run's final epoch (``cfg.epochs``)
    # save(path, extra): a checkpoint of the run as it stands, which ``fit(resume_from=path)`` continues from; the
    # config and (fp16) the GradScaler's state are added to ``extra``. One writer only: rank 0 of a distributed run.
    save: SaveCheckpoint


@dataclass(frozen=True)
class FitHooks:
    """What a run hosted by a framework (Ray Train's DDP workers) adds to ``fit``; the defaults are one process.

    - ``rank`` / ``world_size``: the worker's shard of the data (``train_shard``, ``eval_shard``).
    - ``prepare_model(model)``: device placement and wrapping (``ray.train.torch.prepare_model``: DDP); the default
      is ``model.to(device)``. Checkpoints save the unwrapped module.
    - ``reduce(tensors)``: a sum across workers in place, on the device (see ``run_epoch``); None for one worker.
    - ``start(history)``: called once before the first epoch with the history so far (a resumed run's, else empty).
    - ``report(end)``: called on every rank after each epoch (``EpochEnd``), after ``fit``'s own checkpoint.
    """

    rank: int = 0
    world_size: int = 1
    prepare_model: Callable[[nn.Module], nn.Module] | None = None
    reduce: Callable[[list[Tensor]], None] | None = None
    start: Callable[[list[dict[str, Any]]], None] | None = None
    report: Callable[[EpochEnd], None] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")


def fit(
    cfg: FitConfig,
    data: Any,
    *,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    stop_after: int | None = None,
    deterministic: bool = False,
    posthoc: bool = True,
    posthoc_metric: str = "balanced_accuracy",
    posthoc_mode: str = "max",
    hooks: FitHooks | None = None,
) -> list[dict[str, Any]]:
    """Train ``cfg`` on ``data`` (an ``lt_core.datasets.LTData``); returns the per-epoch history.

    When ``data.val`` is set (see ``lt_core.datasets.with_validation``) each epoch also reports ``val_<metric>``.

    ``callback(epoch, metrics)`` gets the 1-based epoch and the full metrics dict (per-class accuracy, shot
    groups, calibration, ``train_loss``, ``lr``, ``epoch_time_s``). With ``checkpoint_path`` a checkpoint is
    written after every epoch; ``resume_from`` continues from one (model, optimizer, RNG states, history, and the
    fp16 ``GradScaler``'s loss scale). ``stop_after`` ends the run early after that many epochs in total (for tests
    of resume). On CUDA, ``configure_device(device, deterministic=...)`` sets the speed flags and the loaders follow
    ``loader_options``. ``posthoc=False`` skips the post-hoc grid (``posthoc_metrics``) at each evaluation; its
    variant is chosen by ``posthoc_metric`` (``posthoc_mode``). ``hooks`` (``FitHooks``) make this loop one worker
    of a distributed run: its shard of the data, the wrapped model, reductions across workers, a report per epoch.
    """
    from lt_core.models import create_model

    hooks = hooks or FitHooks()
    seed_everything(cfg.seed)
    configure_device(device, deterministic=deterministic)
    if LOSSES[cfg.loss].needs_class_counts or cfg.reweighting != "none":
        data.require_all_classes()
    model = create_model(cfg.model, data.num_classes, data.input_shape, **cfg.model_params)
    model = hooks.prepare_model(model) if hooks.prepare_model is not None else model.to(device)
    optimizer = build_optimizer(model, cfg)
    scaler = make_grad_scaler(cfg.precision, device)  # fp16 only; its loss scale is checkpointed
    history: list[dict[str, Any]] = []
    start = 0
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer)
        start, history = int(state["epoch"]), list(state["history"])
        scaler_state = (state.get("extra") or {}).get("grad_scaler")
        if scaler is not None and scaler_state:
            scaler.load_state_dict(scaler_state)

    rank, world = hooks.rank, hooks.world_size
    train_set, sampler = train_shard(data, rank, world, cfg.seed)
    # pinned memory on CUDA; worker processes for per-item work (see loader_options)
    workers = {"num_workers": cfg.loader_workers}
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, **loader_options(train_set, device, **workers)
    )
    test_set = eval_shard(data.test, rank, world)
    test_loader = DataLoader(
        test_set, batch_size=eval_batch_size(test_set, cfg), **loader_options(test_set, device, **workers)
    )
    val_loader = None
    if getattr(data, "val", None) is not None:
        val_set = eval_shard(data.val, rank, world)
        val_loader = DataLoader(
            val_set, batch_size=eval_batch_size(val_set, cfg), **loader_options(val_set, device, **workers)
        )
    schedule = LossSchedule(cfg, data.class_counts, device)
    if hooks.start is not None:
        hooks.start(list(history))
    end = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    for epoch in range(start, end):
        metrics = run_epoch(
            model,
            optimizer,
            cfg,
            schedule,
            sampler,
            train_loader,
            test_loader,
            data.class_counts,
            epoch,
            device=device,
            reduce=hooks.reduce,
            val_loader=val_loader,
            scaler=scaler,
            posthoc=posthoc,
            posthoc_metric=posthoc_metric,
            posthoc_mode=posthoc_mode,
        )
        history.append(scalar_metrics(metrics))

        def save(path: str | os.PathLike[str], extra: dict[str, Any], done: int = epoch + 1) -> Path:
            extra = {"config": cfg.to_dict(), **extra}
            if scaler is not None:
                extra["grad_scaler"] = scaler.state_dict()
            return save_checkpoint(path, model, optimizer, done, history, extra)

        if checkpoint_path is not None:
            save(checkpoint_path, {})
        if hooks.report is not None:
            hooks.report(EpochEnd(epoch + 1, metrics, list(history), epoch + 1 == cfg.epochs, save))
        if callback is not None:
            callback(epoch + 1, metrics)
    return history
