"""Per-epoch cost of the post-hoc grid (logit adjustment and tau-normalisation, 9 taus each, on test and validation)
relative to the plain evaluation.

``lt_core.engine.fit`` (no Ray) with ``posthoc=False`` and ``posthoc=True``, interleaved, same seed; reported: the
median epoch time (train + evaluation of test and validation) of each and the ratio, and the median time of one
evaluation pass over test + validation alone, plain vs with the grid. Small datasets are the worst case: there the
evaluation is a large share of an epoch.

    python benchmarks/bench_posthoc_cost.py [--repeats 5] [--epochs 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader

from lt_core.datasets import load_dataset, with_validation
from lt_core.engine import FitConfig, evaluate, fit, posthoc_metrics
from lt_core.models import create_model
from lt_core.posthoc import PosthocAccumulator, linear_head

CASES = {
    "digits_lt": ({"imbalance_factor": 50}, [128]),
    "synthetic_lt": ({"num_classes": 20, "dim": 32, "n_max": 400, "imbalance_factor": 100, "class_sep": 2.5}, [128]),
    # a larger run (still small next to CIFAR-LT): 100 classes, ~19k training rows, a wider MLP
    "synthetic_lt (100 cls)": (
        {"num_classes": 100, "dim": 128, "n_max": 1000, "imbalance_factor": 100, "class_sep": 2.5},
        [512, 512],
    ),
}


def eval_pass(model, data, posthoc: bool) -> float:
    t0 = time.perf_counter()
    k = data.num_classes
    accs = []
    for split in (data.test, data.val):
        ph = PosthocAccumulator(k, data.class_counts, linear_head(model)) if posthoc else None
        evaluate(model, DataLoader(split, batch_size=512), k, posthoc=ph)
        accs.append(ph)
    if posthoc:
        posthoc_metrics(accs[0], accs[1], data.class_counts)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); median over {args.repeats} runs, epochs 2..{args.epochs}"
    )
    print(
        "| dataset | train / val / test | epoch plain (ms) | epoch + post-hoc (ms) | epoch ratio | eval plain (ms) "
        "| eval + post-hoc (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (params, hidden) in CASES.items():
        data = with_validation(load_dataset(name.split(" ")[0], seed=0, **params), 0.5, 0)
        cfg = FitConfig(model_params={"hidden_sizes": hidden}, epochs=args.epochs, batch_size=64, lr=0.05)
        times: dict[bool, list[float]] = {False: [], True: []}
        evals: dict[bool, list[float]] = {False: [], True: []}
        model = create_model("mlp", data.num_classes, data.input_shape, hidden_sizes=hidden)
        for _ in range(args.repeats):
            for flag in (False, True):
                history = fit(cfg, data, posthoc=flag)
                times[flag] += [h["epoch_time_s"] for h in history[1:]]
                evals[flag].append(eval_pass(model, data, flag))
        plain, post = statistics.median(times[False]), statistics.median(times[True])
        e_plain, e_post = statistics.median(evals[False]), statistics.median(evals[True])
        sizes = f"{len(data.train)} / {len(data.val)} / {len(data.test)}"
        print(
            f"| {name} | {sizes} | {1e3 * plain:.1f} | {1e3 * post:.1f} | {post / plain:.3f} | {1e3 * e_plain:.1f} "
            f"| {1e3 * e_post:.1f} |"
        )


if __name__ == "__main__":
    main()
