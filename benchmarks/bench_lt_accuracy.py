"""Test balanced accuracy of every loss chosen on validation vs chosen on test (the optimism), ce as the control.

Runs ``lt_core.engine.fit`` (no Ray) on ``digits_lt`` (imbalance factor 50) and on a harder ``synthetic_lt``
(20 classes, imbalance factor 100, overlapping clusters), every loss with its default parameters, plus the
recipes that are part of a method (IB with its CE warm-up for the first half, LDAM-DRW, CE-DRW), over 5 seeds.
Half of each class's test images (seeded) form the validation split, as in a job. Per loss it prints, as mean +- std
over seeds, the test metric at the last epoch, at the epoch chosen on validation and at the epoch chosen on test; the
optimism (on test - on val, paired by seed); and the paired gain over cross-entropy under both selections. Nothing
here is tuned per loss.

Two more rows come from the ce runs themselves (no extra training): "ce + post-hoc LA" is cross-entropy with its logits
adjusted by -tau log(prior) (Menon et al. 2021), and "ce + post-hoc best" the best of that and tau-normalisation; tau
(0..2 in steps of 0.25) is chosen on validation at every epoch, as a job does, and reported on test at the epoch the
raw model's validation metric selects ("sel. on test": the epoch with the best adjusted test figure).

    python benchmarks/bench_lt_accuracy.py [--seeds 5] [--epochs 30] [--datasets digits_lt synthetic_lt]
        [--losses ce logit_adjusted]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lt_core.datasets import load_dataset, with_validation
from lt_core.engine import FitConfig, fit
from lt_core.losses import LOSSES

DATASETS = {
    "digits_lt": {"imbalance_factor": 50},
    "synthetic_lt": {"num_classes": 20, "dim": 32, "n_max": 400, "imbalance_factor": 100, "class_sep": 2.5},
}


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


def selected(history: list[dict], on: str, metric: str = "balanced_accuracy", test_key: str | None = None) -> dict:
    """The epoch chosen by ``on`` ("val": best val_<metric>, "test": best test ``test_key`` (default <metric>),
    "last"); first wins ties."""
    if on == "last":
        return history[-1]
    key = f"val_{metric}" if on == "val" else (test_key or metric)
    return max(history, key=lambda h: (h[key], -h["epoch"]))


# Rows derived from the ce runs: (label, the history key of the test figure of the post-hoc variant)
POSTHOC_ROWS = (
    ("ce + post-hoc LA", "posthoc_la_balanced_accuracy"),
    ("ce + post-hoc best", "posthoc_balanced_accuracy"),
)


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--val-fraction", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--losses", nargs="+", help="only these rows (labels; ce is always run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    for ds_name in args.datasets:
        t0 = time.perf_counter()
        histories: dict[str, list[list[dict] | None]] = {}
        errors: dict[str, set[str]] = {}
        for seed in range(args.seeds):
            # The job's protocol: half of each class's test images (seeded) become the validation split.
            data = with_validation(load_dataset(ds_name, seed=seed, **DATASETS[ds_name]), args.val_fraction, seed)
            for label, overrides in rows(args.epochs):
                if args.losses and label != "ce" and label not in args.losses:
                    continue
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
                    history = fit(cfg, data)
                except Exception as exc:  # report, don't hide: a diverged loss is a result too
                    history = None
                    errors.setdefault(label, set()).add(type(exc).__name__)
                histories.setdefault(label, []).append(history)
        counts = data.class_counts.tolist()
        print(f"\n## {ds_name} {DATASETS[ds_name]} - train counts (last seed) {counts}")
        print(
            f"   {args.seeds} seeds x {args.epochs} epochs, mlp [128], SGD lr 0.05 cosine; val/test = "
            f"{len(data.val)}/{len(data.test)} images (val_fraction {args.val_fraction}); "
            f"test balanced accuracy in %; {time.perf_counter() - t0:.0f} s"
        )
        print(
            "   'on val': the epoch with the best validation metric (what a job reports); 'on test': the best test "
            "epoch (choose and report on test); optimism = on test - on val (points, paired by seed); gain: paired "
            "vs ce, same seed, same selection"
        )
        cols = ("last epoch", "sel. on val", "sel. on test", "optimism", "gain (on val)", "gain (on test)")
        print(f"| {'loss':<22} | " + " | ".join(f"{c:>14}" for c in cols) + " |")
        print("|" + "-" * 24 + "|" + "|".join("-" * 16 for _ in cols) + "|")
        picks = {
            label: {
                on: [None if h is None else 100 * selected(h, on)["balanced_accuracy"] for h in hs]
                for on in ("last", "val", "test")
            }
            for label, hs in histories.items()
        }
        for label, key in POSTHOC_ROWS:
            picks[label] = {
                on: [None if h is None else 100 * selected(h, on, test_key=key)[key] for h in histories["ce"]]
                for on in ("last", "val", "test")
            }
        ce = picks["ce"]
        for label, p in picks.items():
            ok = [i for i in range(args.seeds) if p["val"][i] is not None and ce["val"][i] is not None]
            cells = []
            for on in ("last", "val", "test"):
                m, sd = mean_sd([p[on][i] for i in ok]) if ok else (float("nan"), 0.0)
                cells.append(f"{m:>6.1f} +-{sd:>4.1f}")
            m, sd = mean_sd([p["test"][i] - p["val"][i] for i in ok]) if ok else (float("nan"), 0.0)
            cells.append(f"{m:>+6.1f} +-{sd:>4.1f}")
            for on in ("val", "test"):
                m, sd = mean_sd([p[on][i] - ce[on][i] for i in ok]) if ok else (float("nan"), 0.0)
                cells.append(f"{m:>+6.1f} +-{sd:>4.1f}")
            note = f" ({', '.join(sorted(errors[label]))} on {args.seeds - len(ok)} seeds)" if label in errors else ""
            print(f"| {label:<22} | " + " | ".join(f"{c:>14}" for c in cells) + f" |{note}")
        chosen = [selected(h, "val") for h in histories["ce"] if h is not None]
        print(
            "   tau chosen on validation at the selected ce epoch, per seed: LA "
            + str([h["posthoc_la_tau"] for h in chosen])
            + "; best variant "
            + str([f"{h['posthoc_method']}:{h['posthoc_tau']}" for h in chosen])
        )


if __name__ == "__main__":
    main()
