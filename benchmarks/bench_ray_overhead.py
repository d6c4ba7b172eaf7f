"""What Ray costs: one trial's epoch time under Ray Train against ``lt_core.engine.fit`` in a plain process.

Same data (synthetic long-tailed 3x32x32 images, written to a temporary .npz), same model (``resnet32``), same
torch thread count, in the same process run:

1. plain ``lt_core.engine.fit`` (1 thread) - the baseline;
2. the same trial under Ray Train, 1 worker (1 thread), reporting and checkpointing every epoch;
3. 2 DDP workers (1 thread each) against 1 worker: samples/s;
4. a 1-trial search through ``run_job`` (one worker: the trial trains in the Tune trial's own process): its
   per-epoch time, and job start-up (``run_job`` called -> first epoch reported).

Per-epoch time is the wall time between consecutive epoch reports (so Ray's report/checkpoint cost counts),
from the 2nd epoch on (the first includes warm-up).

    python benchmarks/bench_ray_overhead.py [--epochs 4] [--train-size 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")


def make_npz(path: Path, n_train: int, n_test_per_class: int = 50, k: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1, size=(k, 3, 32, 32)).astype(np.float32)
    weights = np.array([(1 / 50) ** (i / (k - 1)) for i in range(k)])
    counts = np.maximum(1, (weights / weights.sum() * n_train).astype(int))
    y_train = np.repeat(np.arange(k), counts)
    y_test = np.repeat(np.arange(k), n_test_per_class)
    x_train = means[y_train] + rng.normal(0, 2, size=(len(y_train), 3, 32, 32)).astype(np.float32)
    x_test = means[y_test] + rng.normal(0, 2, size=(len(y_test), 3, 32, 32)).astype(np.float32)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def per_epoch(stamps: list[float]) -> float:
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return statistics.median(gaps) if gaps else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from jobs.plan import plan_trials
    from jobs.spec import JobSpec
    from jobs.train import METRICS_JSON, train_loop_per_worker
    from jobs.tune import run_job
    from lt_core.datasets import load_dataset
    from lt_core.engine import FitConfig, fit

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    npz = tmp / "images.npz"
    make_npz(npz, args.train_size)
    dataset = {"name": "npz", "path": str(npz)}
    spec = JobSpec.model_validate(
        {
            "dataset": dataset,
            "model": {"name": "resnet32"},
            "losses": [{"name": "ce"}],
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 0.05},
            "scaling": {"num_workers": 1, "cpus_per_worker": 0.99},
            "tune": {"control": False},
        }
    )
    trial = plan_trials(spec)[0]
    data = load_dataset("npz", path=str(npz))
    n_train = len(data.train)

    # 1. plain process, 1 thread
    torch.set_num_threads(1)
    stamps: list[float] = []
    cfg = FitConfig(model="resnet32", epochs=args.epochs, batch_size=args.batch_size, lr=0.05)
    fit(cfg, data, callback=lambda e, m: stamps.append(time.perf_counter()))
    plain = per_epoch(stamps)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)

    def ray_run(workers: int) -> tuple[float, float]:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"trial": trial, "dataset": dataset, "threads": 1},
            scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.99}),
            run_config=ray.train.RunConfig(name=f"bench-{workers}w", storage_path=str(tmp / "ray")),
        )
        t0 = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - t0
        history = [c[1] for c in result.best_checkpoints] if result.best_checkpoints else []
        stamps = sorted(h["reported_at"] for h in history) or [json.loads(result.metrics[METRICS_JSON])["reported_at"]]
        return per_epoch(stamps), wall

    one, one_wall = ray_run(1)
    two, two_wall = ray_run(2)

    t0 = time.perf_counter()
    first: list[float] = []
    reported: list[float] = []

    def on_event(e: dict) -> None:
        if e["type"] == "epoch":
            first.append(time.perf_counter())
            reported.append(e["metrics"]["reported_at"])

    run_job(spec, storage_path=tmp / "tune", on_event=on_event)  # one worker: the trial trains in its own process
    startup = first[0] - t0 if first else float("nan")
    in_process = per_epoch(sorted(reported))
    ray.shutdown()

    print(f"\nresnet32, {n_train} train images 3x32x32, batch {args.batch_size}, {args.epochs} epochs, 1 torch thread")
    print("| run | s / epoch | samples/s | ratio |")
    print("|---|---|---|---|")
    print(f"| plain lt_core.engine.fit (baseline) | {plain:.2f} | {n_train / plain:.0f} | 1.00 |")
    print(f"| Tune trial in its own process (run_job, 1 worker) | {in_process:.2f} | {n_train / in_process:.0f} | "
          f"{in_process / plain:.2f} (time) |")
    print(f"| Ray Train, 1 worker | {one:.2f} | {n_train / one:.0f} | {one / plain:.2f} (time) |")
    print(f"| Ray Train, 2 workers | {two:.2f} | {n_train / two:.0f} | {one / two:.2f}x samples/s vs 1 worker |")
    print(f"\nRay overhead per epoch: in-process trial {100 * (in_process / plain - 1):+.1f}%, "
          f"Ray Train 1 worker {100 * (one / plain - 1):+.1f}% (goal <= +10%)")
    print(f"TorchTrainer.fit wall: 1 worker {one_wall:.1f} s, 2 workers {two_wall:.1f} s")
    print(f"job start-up (run_job called -> first epoch reported): {startup:.1f} s")


if __name__ == "__main__":
    main()
