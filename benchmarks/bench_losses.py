"""Forward + backward time of every registered loss against ``F.cross_entropy``, in the same process.

Run from the repository root::

    python -m benchmarks.bench_losses --repeats 30 --device cpu

Shapes (N, K) = (4096, 1000) and (256, 10), float32, class counts of an exponential long-tail profile with
imbalance factor 100. Each round times every loss once, in turn, so that a noisy neighbour slows all of them
alike; the table reports the median over rounds of the wall time and its ratio to cross-entropy's, and the same
ratio for the process's CPU time (steadier on a shared machine). Goal: every loss <= 1.5x cross-entropy at
(4096, 1000), ``seql`` <= 2x (it draws random numbers).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lt_core.losses import LOSSES, create_loss

SHAPES = ((4096, 1000), (256, 10))
FEATURE_DIM = 64
GOALS = {"seql": 2.0}
DEFAULT_GOAL = 1.5
# Losses meant for cosine logits (a normalised classifier) get logits in [-1, 1], as in training, and are compared
# with F.cross_entropy on those same logits. On N(0, 1) logits LDAM's scale of 30 puts most softmax terms below
# float32's normal range, and both would mostly time the CPU's denormal penalty.
COSINE_LOGITS = {"ldam"}
BASELINE, COSINE_BASELINE = "F.cross_entropy", "F.cross_entropy[cos]"


def long_tail_counts(num_classes: int, imbalance_factor: float = 100.0, n_max: int = 500) -> torch.Tensor:
    """Exponential profile: n_k = n_max * imbalance_factor^(-k / (K - 1))."""
    k = torch.arange(num_classes, dtype=torch.float64)
    return (n_max * imbalance_factor ** (-k / max(num_classes - 1, 1))).round().clamp_min(1).to(torch.int64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fns(n: int, k: int, device: torch.device) -> dict[str, Callable[[], None]]:
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(n, k, device=device, generator=gen).requires_grad_()
    cosine_logits = (torch.rand(n, k, device=device, generator=gen) * 2 - 1).requires_grad_()
    features = torch.randn(n, FEATURE_DIM, device=device, generator=gen).requires_grad_()
    target = torch.randint(0, k, (n,), device=device, generator=gen)
    counts = long_tail_counts(k)

    def step(loss_fn: Callable[..., torch.Tensor], z: torch.Tensor, needs_features: bool = False) -> Callable[[], None]:
        def run() -> None:
            z.grad = None
            features.grad = None
            kwargs = {"features": features} if needs_features else {}
            loss_fn(z, target, **kwargs).backward()

        return run

    fns = {BASELINE: step(F.cross_entropy, logits), COSINE_BASELINE: step(F.cross_entropy, cosine_logits)}
    for name, info in LOSSES.items():
        module = create_loss(name, class_counts=counts if info.needs_class_counts else None).to(device)
        fns[name] = step(module, cosine_logits if name in COSINE_LOGITS else logits, info.needs_features)
    return fns


def bench(n: int, k: int, device: torch.device, repeats: int, warmup: int = 3) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of forward + backward per loss."""
    fns = _step_fns(n, k, device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in fns}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per shape (default 30)")
    parser.add_argument(
        "--device", default="auto", help="'cpu', 'cuda', or 'auto' (default: cpu, plus cuda when available)"
    )
    args = parser.parse_args(argv)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.repeats} rounds, float32")
    header = (
        f"{'device':<7} {'N':>5} {'K':>5}  {'loss':<21} {'median ms':>10} {'x CE':>6} {'x CE cpu':>9} {'goal':>5}  ok"
    )
    print(header)
    print("-" * len(header))
    for device_name in devices:
        device = torch.device(device_name)
        for n, k in SHAPES:
            medians = bench(n, k, device, args.repeats)
            for name, (wall, cpu) in medians.items():
                base_wall, base_cpu = medians[COSINE_BASELINE if name in COSINE_LOGITS else BASELINE]
                ratio, cpu_ratio = wall / base_wall, cpu / base_cpu if base_cpu > 0 else float("nan")
                goal = GOALS.get(name, DEFAULT_GOAL) if (n, k) == SHAPES[0] and name in LOSSES else None
                verdict = "" if goal is None else ("yes" if ratio <= goal else "NO")
                goal_text = "" if goal is None else f"{goal:.1f}"
                row = f"{device_name:<7} {n:>5} {k:>5}  {name:<21} {wall * 1e3:>10.3f} {ratio:>6.2f} {cpu_ratio:>9.2f}"
                print(f"{row} {goal_text:>5}  {verdict}")


if __name__ == "__main__":
    main()
