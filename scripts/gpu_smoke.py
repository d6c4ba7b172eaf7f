#!/usr/bin/env python
"""GPU smoke test: the CUDA and NCCL paths of the trainer, on one machine with one or more GPUs (3-5 min on one).

Run from the repository root::

    python scripts/gpu_smoke.py                 # every check; exit 1 if any fails
    python scripts/gpu_smoke.py --only losses syncs
    python scripts/gpu_smoke.py --device cpu    # the same checks on the CPU where they make sense (a dry run)

Checks, in order (each PASS, FAIL or SKIP with a reason; a table at the end):

- ``losses``: every registered loss on CUDA, float32 and bfloat16, against the CPU (values and gradients), finite at
  logits of +-100; a bad target fails on the device, in a subprocess (a device-side assertion ends its CUDA context).
- ``syncs``: host syncs counted with ``torch.cuda.set_sync_debug_mode("warn")``: none in any loss's forward and
  backward, and at most one per ``FINITE_CHECK_EVERY`` steps (plus the epoch's end) in ``train_one_epoch``.
- ``nccl``: a one-rank NCCL group: ``global_class_counts`` and ``run_epoch`` with the all-reduce, against no reduce.
- ``trials``: ``run_trial`` on CUDA for 2 epochs with ce, ldam-drw, seql and ib-with-warm-up; then a resume from the
  first epoch's checkpoint, with deterministic flags, equal to the uninterrupted run.
- ``resnet32``: training steps per second of ResNet-32 on CIFAR-shaped batches of 128, float32 (TF32) and bf16
  autocast.
- ``ray``: a Ray ``TorchTrainer`` with ``use_gpu`` (one worker, through ``train_loop_per_worker``) and, with 2 GPUs
  or more, a 2-worker DDP trial whose class counts are all-reduced over NCCL (skipped with a reason on one GPU).

Without CUDA every check is skipped ("skipped: no CUDA") and the script exits 0.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

DIGITS = {"name": "digits_lt", "imbalance_factor": 20, "profile": "exp", "test_per_class": 50, "seed": 0}
CHECKS: dict[str, Callable[[torch.device], str]] = {}


class Skip(Exception):  # noqa: N818 - a check's outcome, not an error
    """The check cannot run here; the message says why."""


def check(name: str) -> Callable[[Callable[[torch.device], str]], Callable[[torch.device], str]]:
    def register(fn: Callable[[torch.device], str]) -> Callable[[torch.device], str]:
        CHECKS[name] = fn
        return fn

    return register


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _assert_close(name: str, got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> float:
    """Compare on the CPU in float64; returns the largest absolute difference."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    if not torch.isfinite(got).all():
        raise AssertionError(f"{name}: not finite: {got}")
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    return float((got - want).abs().max()) if got.numel() else 0.0


def _relative_error(name: str, got: torch.Tensor, want: torch.Tensor, limit: float) -> float:
    """max |got - want| / max |want| (float64, on the CPU); raises above ``limit``."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if not torch.isfinite(got).all():
        raise AssertionError(f"{name}: not finite")
    error = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    if error > limit:
        raise AssertionError(f"{name}: relative error {error:.2e} > {limit:.0e}")
    return error


def _counts(k: int) -> torch.Tensor:
    i = torch.arange(k, dtype=torch.float64)
    return (500 * 100.0 ** (-i / (k - 1))).round().clamp_min(1).long()


# ----------------------------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------------------------
# SEQL draws a random mask; gamma=1 drops every tail logit of the other classes' samples, the same on any device.
DETERMINISTIC = {"seql": {"gamma": 1.0}}
# Losses meant for cosine logits in [-1, 1] (LDAM scales them by 30) get those, as in training.
COSINE_LOGITS = {"ldam"}


def _loss_case(name: str, device: torch.device, dtype: torch.dtype, seed: int = 0, scale: float = 3.0):
    from lt_core.losses import LOSSES, create_loss

    info = LOSSES[name]
    n, k, d = 256, 20, 16
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * scale
    if name in COSINE_LOGITS and scale < 10:
        logits = torch.rand(n, k, generator=g) * 2 - 1  # as from a normalised classifier
    target = torch.randint(0, k, (n,), generator=g)
    features = torch.randn(n, d, generator=g) if info.needs_features else None
    weight = torch.linspace(0.5, 1.5, k)
    module = create_loss(name, class_counts=_counts(k), class_weight=weight, **DETERMINISTIC.get(name, {}))

    def run(dev: torch.device, dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        z = logits.to(dev, dt, copy=True).requires_grad_()  # a fresh leaf every call
        h = None if features is None else features.to(dev, dt)
        loss = module.to(dev)(z, target.to(dev), features=h)
        loss.backward()
        return loss, z.grad

    return run


@check("losses")
def check_losses(device: torch.device) -> str:
    from lt_core.losses import LOSSES

    worst: dict[str, float] = {}
    cpu = torch.device("cpu")
    for name in sorted(LOSSES):
        run = _loss_case(name, device, torch.float32)
        ref_loss, ref_grad = run(cpu, torch.float64)
        loss, grad = run(device, torch.float32)
        worst[f"{name}/fp32"] = _assert_close(f"{name} fp32 loss", loss, ref_loss, 1e-4, 1e-5)
        _assert_close(f"{name} fp32 grad", grad, ref_grad, 1e-3, 1e-6)
        # bf16 logits (8 significant bits): the relative error against the float64 CPU result, loss and gradient
        loss, grad = run(device, torch.bfloat16)
        assert loss.dtype == torch.bfloat16, f"{name}: bf16 logits gave a {loss.dtype} loss"
        worst[f"{name}/bf16"] = _relative_error(f"{name} bf16 loss", loss, ref_loss, 2e-2)
        _relative_error(f"{name} bf16 grad", grad, ref_grad, 5e-2)
        # logits of +-100: finite values and gradients
        loss, grad = _loss_case(name, device, torch.float32, scale=100.0)(device, torch.float32)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), f"{name}: not finite at logits of +-100"
    if device.type == "cuda":
        _seql_drop_rate(device)
        _bad_target_fails_on_the_device()
    fp32 = max(v for k, v in worst.items() if k.endswith("fp32"))
    bf16 = max(v for k, v in worst.items() if k.endswith("bf16"))
    extra = "; seql draw rates and a bad target's device assertion ok" if device.type == "cuda" else ""
    return f"{len(LOSSES)} losses; vs CPU float64: fp32 max abs {fp32:.1e}, bf16 max rel {bf16:.1e}{extra}"


def _seql_drop_rate(device: torch.device) -> None:
    from lt_core.losses import drop_mask

    for gamma in (0.1, 0.5, 0.9):  # the sparse (drops rare, keeps rare) and the dense draws, on the device
        tail = torch.ones(64, dtype=torch.bool, device=device)
        target = torch.zeros(4096, dtype=torch.int64, device=device)
        mask = drop_mask(tail, target, gamma)[:, 1:]
        rate = mask.double().mean().item()
        assert abs(rate - gamma) < 0.005, f"seql drop rate on {device}: {rate:.4f} for gamma {gamma}"


def _bad_target_fails_on_the_device() -> None:
    code = (
        "import torch, lt_core.losses as L\n"
        "loss = L.ce_loss(torch.zeros(2, 3, device='cuda'), torch.tensor([0, 5], device='cuda'))\n"
        "torch.cuda.synchronize()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=_env()
    )
    out = proc.stdout + proc.stderr
    if proc.returncode == 0 or not ("device-side assert" in out or "expected target values" in out):
        raise AssertionError(f"a target of 5 with 3 classes did not fail on the device: rc {proc.returncode}\n{out}")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


# ----------------------------------------------------------------------------------------------------------------
# syncs
# ----------------------------------------------------------------------------------------------------------------
class _SyncCounter:
    """Counts the warnings ``torch.cuda.set_sync_debug_mode("warn")`` emits, one per synchronising call."""

    def __enter__(self) -> _SyncCounter:
        self._catch = warnings.catch_warnings(record=True)
        self.records = self._catch.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self._catch.__exit__(*exc)

    @property
    def count(self) -> int:
        return sum("synchroniz" in str(w.message) for w in self.records)


@check("syncs")
def check_syncs(device: torch.device) -> str:
    if device.type != "cuda":
        raise Skip("sync debug mode is CUDA's")
    from torch.utils.data import DataLoader, TensorDataset

    from lt_core.engine import FINITE_CHECK_EVERY, loader_options, train_one_epoch
    from lt_core.losses import LOSSES, create_loss
    from lt_core.models import create_model

    n, k = 128, 20
    counts = _counts(k)
    model = create_model("mlp", k, (32,), hidden_sizes=[64]).to(device)
    x = torch.randn(n, 32, device=device)
    y = torch.randint(0, k, (n,), device=device)
    per_loss = {}
    for name in sorted(LOSSES):
        loss_fn = create_loss(name, class_counts=counts, class_weight=torch.linspace(0.5, 1.5, k)).to(device)
        needs_features = LOSSES[name].needs_features

        def step(loss_fn: Any = loss_fn, needs_features: bool = needs_features) -> None:
            logits, features = model(x)
            loss_fn(logits, y, features=features if needs_features else None).backward()

        step()  # first call: lazy initialisation may sync
        _sync(device)
        with _SyncCounter() as counter:
            for _ in range(5):
                step()
        per_loss[name] = counter.count
    bad = {name: c for name, c in per_loss.items() if c}
    if bad:
        raise AssertionError(f"host syncs in 5 forward+backward steps: {bad}")

    # the engine's loop: pinned in-memory batches, the NaN flags read every FINITE_CHECK_EVERY steps
    steps = 2 * FINITE_CHECK_EVERY + 10
    data = TensorDataset(torch.randn(steps * 32, 32), torch.randint(0, k, (steps * 32,)))
    loader = DataLoader(data, batch_size=32, **loader_options(data, device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = create_loss("seql", class_counts=counts).to(device)
    train_one_epoch(model, loader, criterion, optimizer, epoch=0, device=device)  # warm-up
    with _SyncCounter() as counter:
        stats = train_one_epoch(model, loader, criterion, optimizer, epoch=0, device=device)
    allowed = math.ceil(steps / FINITE_CHECK_EVERY) + 1  # the flag reads, and the loss sum at the end
    if counter.count > allowed:
        raise AssertionError(f"train_one_epoch: {counter.count} syncs in {steps} steps, expected <= {allowed}")
    assert math.isfinite(stats["train_loss"])
    return f"0 syncs/step in every loss; train_one_epoch {counter.count} syncs in {steps} steps (<= {allowed})"


# ----------------------------------------------------------------------------------------------------------------
# nccl
# ----------------------------------------------------------------------------------------------------------------
@check("nccl")
def check_nccl(device: torch.device) -> str:
    import torch.distributed as dist

    from jobs.train import _all_reduce, global_class_counts
    from lt_core.datasets import load_dataset
    from lt_core.engine import EpochShardSampler, FitConfig, LossSchedule, build_optimizer, run_epoch, seed_everything
    from lt_core.models import create_model

    backend = "nccl" if device.type == "cuda" else "gloo"
    tmp = tempfile.mkdtemp(prefix="gpu-smoke-pg-")
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, init_method=f"file://{tmp}/store", rank=0, world_size=1, **kwargs)
    try:
        data = load_dataset("digits_lt", imbalance_factor=20, test_per_class=50, seed=0)
        # world_size 2 makes the trial reduce; the group has one rank, so the sum is this rank's shard (rank 0 of 2)
        counts = global_class_counts(data, 0, 2, device)
        shard = torch.bincount(data.train_targets[0::2], minlength=data.num_classes)
        assert torch.equal(counts, shard), f"{counts.tolist()} != {shard.tolist()}"
        if device.type == "cuda":  # the old code's CPU tensor: NCCL must refuse it, or this check proves nothing
            try:
                dist.all_reduce(torch.zeros(2, dtype=torch.long))
            except (RuntimeError, ValueError):
                pass
            else:
                raise AssertionError("NCCL reduced a CPU tensor: the group is not NCCL-only")

        cfg = FitConfig(model_params={"hidden_sizes": [32]}, epochs=1, batch_size=64, lr=0.1)

        def epoch(reduce: Callable[[list[torch.Tensor]], None] | None) -> dict[str, Any]:
            seed_everything(0)
            model = create_model("mlp", data.num_classes, data.input_shape, hidden_sizes=[32]).to(device)
            sampler = EpochShardSampler(len(data.train))
            loader = torch.utils.data.DataLoader(data.train, batch_size=64, sampler=sampler)
            test = torch.utils.data.DataLoader(data.test, batch_size=512)
            schedule = LossSchedule(cfg, data.class_counts, device)
            return run_epoch(
                model, build_optimizer(model, cfg), cfg, schedule, sampler, loader, test, data.class_counts, 0,
                device=device, reduce=reduce,
            )  # fmt: skip

        with_reduce = epoch(lambda tensors: _all_reduce(tensors, 2, device))
        without = epoch(None)
        # the same seed and data: equal up to GPU arithmetic (a flipped prediction moves an accuracy by 1/500)
        assert math.isclose(with_reduce["train_loss"], without["train_loss"], rel_tol=1e-4), (with_reduce, without)
        for key in ("balanced_accuracy", "accuracy"):
            assert abs(with_reduce[key] - without[key]) <= 0.01, (key, with_reduce[key], without[key])
        return f"{backend}: counts {counts.sum().item()} samples; run_epoch with the reduce = without (1 rank)"
    finally:
        dist.destroy_process_group()
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# trials
# ----------------------------------------------------------------------------------------------------------------
TRIALS: dict[str, dict[str, Any]] = {
    "ce": {"loss": "ce"},
    "ldam-drw": {
        "loss": "ldam",
        "normalized": True,
        "reweighting": {"scheme": "effective_number", "beta": 0.999, "start_epoch": 1},
    },
    "seql": {"loss": "seql", "loss_params": {"gamma": 0.9, "lambda_": 0.05}},
    "ib-with-warm-up": {"loss": "ib", "loss_start_epoch": 1, "loss_params": {"alpha": 100.0}},
}


def _trial(kind: str, epochs: int = 2, dropout: float = 0.0) -> Any:
    from jobs.plan import TrialConfig

    base = {
        "model": "mlp",
        "model_params": {"hidden_sizes": [64], "dropout": dropout},
        "loss_params": {},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 0.05, "seed": 1},
    }
    return TrialConfig.model_validate(base | TRIALS[kind])


@check("trials")
def check_trials(device: torch.device) -> str:
    from jobs.train import TrialContext, run_trial

    summary = []
    for kind in TRIALS:
        history = run_trial(_trial(kind), DIGITS, TrialContext(device=device))
        assert [h["epoch"] for h in history] == [1, 2], history
        assert all(math.isfinite(h["train_loss"]) for h in history), (kind, history)
        assert history[-1]["balanced_accuracy"] > 0.2, (kind, history[-1]["balanced_accuracy"])
        summary.append(f"{kind} {history[-1]['balanced_accuracy']:.2f}")

    # resume: SEQL's masks and dropout draw from the device's generator, which the checkpoint must carry
    trial = _trial("seql", epochs=3, dropout=0.2)
    saved = Path(tempfile.mkdtemp(prefix="gpu-smoke-ckpt-"))
    try:

        def keep_first(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
            if checkpoint_dir and not (saved / "epoch1").exists():
                shutil.copytree(checkpoint_dir, saved / "epoch1")

        full = run_trial(trial, DIGITS, TrialContext(device=device, report=keep_first, deterministic=True))
        resumed = run_trial(
            trial, DIGITS, TrialContext(device=device, resume_dir=str(saved / "epoch1"), deterministic=True)
        )
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    keys = ("train_loss", "balanced_accuracy", "accuracy")
    for a, b in zip(full[1:], resumed[1:], strict=True):
        diff = {key: (a[key], b[key]) for key in keys if a.get(key) != b.get(key)}
        assert not diff, f"resumed epoch {a['epoch']} differs from the uninterrupted run: {diff}"
    assert len(resumed) == len(full) == 3
    return "2 epochs: " + ", ".join(summary) + "; resume from epoch 1 equal (deterministic)"


# ----------------------------------------------------------------------------------------------------------------
# resnet32
# ----------------------------------------------------------------------------------------------------------------
@check("resnet32")
def check_resnet32(device: torch.device) -> str:
    from lt_core.engine import configure_device
    from lt_core.losses import create_loss
    from lt_core.models import create_model

    configure_device(device)  # TF32 + cudnn.benchmark, as a trial sets them
    steps, batch = (60, 128) if device.type == "cuda" else (3, 32)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = create_loss("ldam", class_counts=_counts(10)).to(device)
    rates = {}
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model = create_model("resnet32", 10, (3, 32, 32)).to(device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def step(model: Any = model, optimizer: Any = optimizer, dtype: torch.dtype | None = dtype) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits, _ = model(x)
                loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

        for _ in range(5):  # warm-up: cudnn.benchmark picks its algorithms
            step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        _sync(device)
        rates[label] = steps / (time.perf_counter() - t0)
        assert math.isfinite(loss.item()), f"resnet32 {label}: loss {loss.item()}"
    return f"batch {batch}: fp32/TF32 {rates['fp32']:.0f} steps/s, bf16 autocast {rates['bf16']:.0f} steps/s"


# ----------------------------------------------------------------------------------------------------------------
# ray
# ----------------------------------------------------------------------------------------------------------------
def _probe_loop(config: dict[str, Any]) -> dict[str, Any]:
    """A Ray Train worker: the all-reduced counts and one epoch of the real trial on the worker's device."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from jobs.train import TrialContext, global_class_counts, run_trial
    from lt_core.datasets import load_dataset

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    data = load_dataset("digits_lt", **{k: v for k, v in config["dataset"].items() if k != "name"})
    counts = global_class_counts(data, rank, world, device)
    history = run_trial(
        config["trial"],
        config["dataset"],
        TrialContext(rank=rank, world_size=world, device=device, prepare_model=ray.train.torch.prepare_model),
    )
    return {
        "rank": rank,
        "world": world,
        "device": str(device),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "counts_equal": torch.equal(counts, data.class_counts),
        "balanced_accuracy": history[-1]["balanced_accuracy"],
    }


@check("ray")
def check_ray(device: torch.device) -> str:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from jobs.train import train_loop_per_worker

    use_gpu = device.type == "cuda"
    gpus = torch.cuda.device_count() if use_gpu else 0
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    storage = tempfile.mkdtemp(prefix="gpu-smoke-ray-")
    ray.init(
        address="local",  # a fresh local Ray, never a cluster that happens to run on this machine
        num_cpus=max(2, min(8, os.cpu_count() or 2)),
        num_gpus=gpus,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    try:
        trial = _trial("ldam-drw", epochs=2)
        resources = {"CPU": 1.0, "GPU": 1.0} if use_gpu else {"CPU": 0.9}  # 2 CPU-only workers fit on 2 CPUs

        def fit(fn: Callable, workers: int, name: str, config: dict[str, Any]) -> Any:
            trainer = TorchTrainer(
                fn,
                train_loop_config=config,
                scaling_config=ray.train.ScalingConfig(
                    num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources
                ),
                run_config=ray.train.RunConfig(
                    name=name,
                    storage_path=storage,
                    failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=0),
                ),
            )
            result = trainer.fit()
            if result.error is not None:
                raise result.error
            return result

        # the service's entry point, one worker on one GPU
        result = fit(train_loop_per_worker, 1, "smoke-1", {"trial": trial, "dataset": DIGITS, "threads": 1})
        assert result.metrics and math.isfinite(result.metrics["balanced_accuracy"]), result.metrics
        label = "use_gpu" if use_gpu else "CPU"
        parts = [f"{label}, 1 worker: balanced_accuracy {result.metrics['balanced_accuracy']:.2f}"]
        probe = fit(_probe_loop, 1, "smoke-probe-1", {"trial": trial, "dataset": DIGITS}).return_value
        assert probe["device"].startswith(device.type) and probe["counts_equal"], probe
        parts.append(f"worker device {probe['device']}")

        if use_gpu and gpus < 2:
            parts.append(f"2-GPU DDP skipped: needs 2 GPUs, found {gpus}")
        else:
            probe = fit(_probe_loop, 2, "smoke-ddp-2", {"trial": trial, "dataset": DIGITS}).return_value
            assert probe["world"] == 2 and probe["counts_equal"], probe
            assert not use_gpu or probe["backend"] == "nccl", probe
            parts.append(f"2-worker DDP ({probe['backend']}): all-reduced counts equal the dataset's")
        return "; ".join(parts)
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run these checks only")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run of the checks")
    args = parser.parse_args(argv)
    names = args.only or list(CHECKS)
    device = torch.device(args.device)
    results: list[tuple[str, str, float, str]] = []
    if device.type == "cuda" and not torch.cuda.is_available():
        results = [(name, "SKIP", 0.0, "skipped: no CUDA") for name in names]
    else:
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
            print(f"# {torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}, torch {torch.__version__}")
        for name in names:
            t0 = time.perf_counter()
            try:
                status, detail = "PASS", CHECKS[name](device)
            except Skip as skip:
                status, detail = "SKIP", f"skipped: {skip}"
            except Exception as error:  # noqa: BLE001 - every failure goes into the table
                traceback.print_exc()
                status, detail = "FAIL", f"{type(error).__name__}: {error}".splitlines()[0][:300]
            results.append((name, status, time.perf_counter() - t0, detail))
            print(f"{name}: {status} ({results[-1][2]:.1f} s) {detail}", flush=True)
    print("\n| check | result | time | detail |\n|---|---|---|---|")
    for name, status, seconds, detail in results:
        print(f"| {name} | {status} | {seconds:.1f} s | {detail} |")
    failed = [name for name, status, _, _ in results if status == "FAIL"]
    print(f"\n{len(results) - len(failed)}/{len(results)} not failed" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
