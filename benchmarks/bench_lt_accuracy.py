"""Balanced / many / medium / few-shot accuracy of every loss, with cross-entropy as the control row.

Runs ``lt_core.engine.fit`` (no Ray) on ``digits_lt`` (imbalance factor 50) and on a harder ``synthetic_lt``
(20 classes, imbalance factor 100, overlapping clusters), every loss with its default parameters, plus the
recipes that are part of a method (IB with its CE warm-up for the first half, LDAM-DRW, CE-DRW), over 5 seeds.
Prints mean +- std per row and the gain over cross-entropy. Nothing here is tuned per loss.

    python benchmarks/bench_lt_accuracy.py [--seeds 5] [--epochs 30] [--datasets digits_lt synthetic_lt]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lt_core.datasets import load_dataset
from lt_core.engine import FitConfig, fit
from lt_core.losses import LOSSES

DATASETS = {
    "digits_lt": {"imbalance_factor": 50},
    "synthetic_lt": {"num_classes": 20, "dim": 32, "n_max": 400, "imbalance_factor": 100, "class_sep": 2.5},
}
KEYS = ("balanced_accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy")


def rows(epochs: int) -> list[tuple[str, dict]]:
    out = [(name, {"loss": name}) for name in LOSSES]
    drw = {"reweighting": "effective_number", "reweighting_beta": 0.9999, "reweighting_start_epoch": int(0.8 * epochs)}
    out += [
        ("ib (CE warm-up 1/2)", {"loss": "ib", "loss_start_epoch": epochs // 2}),
        ("ldam-drw", {"loss": "ldam", **drw}),
        ("ce-drw", {"loss": "ce", **drw}),
    ]
    return out


def cosine_for(loss: str) -> dict:
    # LDAM is defined on cosine logits (a normalised classifier), as in its paper and reference code.
    return {"normalized": True} if loss == "ldam" else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    for ds_name in args.datasets:
        t0 = time.perf_counter()
        results: dict[str, list[dict]] = {}
        for seed in range(args.seeds):
            data = load_dataset(ds_name, seed=seed, **DATASETS[ds_name])
            for label, overrides in rows(args.epochs):
                cfg = FitConfig(
                    model="mlp",
                    model_params={"hidden_sizes": [128], **cosine_for(overrides["loss"])},
                    epochs=args.epochs,
                    batch_size=64,
                    lr=0.05,
                    weight_decay=5e-4,
                    seed=seed,
                    **overrides,
                )
                try:
                    final = fit(cfg, data)[-1]
                except Exception as exc:  # report, don't hide: a diverged loss is a result too
                    final = {k: float("nan") for k in KEYS} | {"error": type(exc).__name__}
                results.setdefault(label, []).append(final)
        counts = data.class_counts.tolist()
        print(f"\n## {ds_name} {DATASETS[ds_name]} - train counts (last seed) {counts}")
        print(
            f"   {args.seeds} seeds x {args.epochs} epochs, mlp [128], SGD lr 0.05 cosine, last-epoch metrics; "
            f"{time.perf_counter() - t0:.0f} s"
        )
        head = f"| {'loss':<22} | " + " | ".join(f"{k.replace('_accuracy', ''):>15}" for k in KEYS)
        print(head + " | gain vs ce (bal.) |")
        print("|" + "-" * 24 + "|" + "|".join("-" * 17 for _ in KEYS) + "|-------------------|")
        ce_mean = statistics.fmean(r["balanced_accuracy"] for r in results["ce"])
        for label, finals in results.items():
            cells = []
            for k in KEYS:
                values = [r[k] for r in finals if r.get(k) is not None]
                if not values:
                    cells.append(f"{'n/a':>15}")
                    continue
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.fmean(values):>8.3f} +-{sd:.3f}")
            bal = statistics.fmean(r["balanced_accuracy"] for r in finals)
            errors = sorted({r["error"] for r in finals if "error" in r})
            note = f" ({', '.join(errors)})" if errors else ""
            print(f"| {label:<22} | " + " | ".join(cells) + f" | {bal - ce_mean:>+17.3f} |{note}")


if __name__ == "__main__":
    main()
