"""The ``longtail`` command line: run the service, submit and follow jobs, read results, run the demo.

    longtail demo [--quick] [--keep]           start a local service + Ray, compare nine losses on digits_lt
    longtail serve [--host --port --ray-address --store --state-dir --data-root ...]
    longtail submit SPEC.yaml [--wait]         queue a job (with --wait: live progress, then the results table)
    longtail status [ID]                       one job, or every job
    longtail results ID [--json | --csv] [--plots DIR]
    longtail cancel ID
    longtail losses | datasets | models        what a spec can name

``--url`` (``$LONGTAIL_URL``, default http://127.0.0.1:8000) and ``--token`` (``$LONGTAIL_TOKEN``) go before the
command. Errors are one line on stderr and a non-zero exit: 1 for errors, 2 for usage, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from service.client import DEFAULT_URL, Client, Job, LongtailError, Results, ServiceUnavailable
from service.ray_head import kill_pids, pids_with_arg, stop_head  # noqa: F401 - pids_with_arg: re-exported

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
READY_TIMEOUT_S = 180.0

# The digits demo: the same job as examples/digits-demo.yaml (a test keeps the two equal), built in code so that
# `longtail demo` works from an installed package too.
DEMO_SPEC: dict[str, Any] = {
    "api_version": "v1",
    "name": "digits-demo",
    "dataset": {"name": "digits_lt", "imbalance_factor": 50, "profile": "exp", "test_per_class": 50, "seed": 0},
    "model": {"name": "mlp", "hidden_sizes": [128]},
    "losses": [
        {"name": "focal", "gamma": {"grid": [1.0, 2.0]}},
        {"name": "label_smoothing", "epsilon": 0.1},
        {"name": "seql", "lambda_": 0.05, "gamma": 0.9},
        {"name": "ib", "alpha": {"loguniform": [100, 2000]}, "start_epoch": 6},
        {"name": "cdt", "gamma": 0.2},
        {
            "name": "ldam",
            "label": "ldam-drw",
            "max_margin": 0.5,
            "scale": 30,
            "reweighting": {"scheme": "effective_number", "beta": 0.9999, "start_epoch": 9},
        },
        {"name": "balanced_softmax"},
        {"name": "logit_adjusted", "tau": {"grid": [1.0, 1.5]}},
    ],
    "train": {
        "epochs": 12,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5.0e-4,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "seed": 0,
    },
    "scaling": {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1},
    "tune": {
        "num_samples": 1,
        "metric": "balanced_accuracy",
        "search": "random",
        "scheduler": "fifo",
        "seed": 0,
        "control": True,
        "repeats": 3,
    },
    "evaluation": {"selection": "val", "val_fraction": 0.5, "epoch": "best"},
}


QUICK_LOSSES = ("focal", "ldam-drw", "balanced_softmax", "logit_adjusted")


def quick_demo_spec() -> dict[str, Any]:
    """The CI-sized demo: four of the losses, one trial each (grid axes cut to their first value), 6 epochs.

    5 trials (with the control), as many at a time as the CPUs hold.
    """
    spec = copy.deepcopy(DEMO_SPEC)
    spec["name"] = "digits-demo-quick"
    spec["train"]["epochs"] = 6
    spec["losses"] = [b for b in spec["losses"] if (b.get("label") or b["name"]) in QUICK_LOSSES]
    for branch in spec["losses"]:
        for key, value in list(branch.items()):
            if isinstance(value, dict) and "grid" in value:
                branch[key] = value["grid"][0]
        if branch.get("reweighting", {}).get("start_epoch") is not None:
            branch["reweighting"]["start_epoch"] = 4
    return spec


# --------------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------------
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | None = None) -> str:
    """A plain, aligned text table (a header, a rule, the rows)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = right or [False] * len(headers)

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if ra else c.ljust(w) for c, w, ra in zip(r, widths, right, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def _is_rate(metric: str) -> bool:
    return metric.endswith("accuracy") or metric == "macro_f1"


def _gain(value: Any, metric: str) -> str:
    if value is None:
        return "-"
    return f"{100 * float(value):+.1f}" if _is_rate(metric) else f"{float(value):+.4f}"


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4g}"


def format_config(config: dict[str, Any] | None) -> str:
    """``{"loss.gamma": 2.0, "reweighting": "none"}`` -> ``gamma=2``: the values a trial was searched with."""
    if not config:
        return ""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "loss_params" and isinstance(value, dict):
            flat.update(value)
        elif key in ("loss", "model", "model_params", "optimizer", "epochs", "seed", "batch_size", "weight_decay"):
            continue  # the fixed part of a trial's full config
        elif key == "reweighting":
            if value not in ("none", None, {}) and not isinstance(value, dict):
                flat["reweighting"] = value
        else:
            flat[key.split(".", 1)[1] if "." in key else key] = value
    return " ".join(f"{k}={_num(v)}" for k, v in flat.items())


def gain_text(row: dict[str, Any], metric: str) -> str:
    """ "+5.2 ± 2.3" (the gain and its standard deviation over seeds), or "+5.2" for one seed."""
    if row.get("gain") is None:
        return "-"
    text = _gain(row["gain"], metric)
    if row.get("gain_std") is not None:
        text += " ± " + _gain(row["gain_std"], metric).lstrip("+")
    return text


def ci_text(row: dict[str, Any], metric: str) -> str:
    """The gain's 95% confidence interval, "[+1.1, +9.3]"; "-" without one (a single seed)."""
    lo, hi = row.get("gain_ci95_lo"), row.get("gain_ci95_hi")
    if lo is None or hi is None:
        return "-"
    return f"[{_gain(lo, metric)}, {_gain(hi, metric)}]"


def selection_note(results: Results) -> str:
    """What was selected on what: the line every results table and the demo end with."""
    on = "test" if results.selected_on == "test" else "validation"
    epoch = "last epoch" if results.best_scope == "last_epoch" else f"epoch with the best {on} {results.metric}"
    seeds = f"{results.repeats} seed{'s' if results.repeats != 1 else ''} per config"
    if results.selected_on == "test":
        return (
            f"Selected on test: each trial's {epoch}, each branch's config and the best trial were chosen on the "
            f"test split that is reported ({seeds}); these figures are optimistic."
        )
    return (
        f"Selected on validation: each trial's {epoch}, each branch's config (best mean over its seeds) and the best "
        f"trial were chosen on the validation split; the test split is only reported ({seeds})."
    )


def results_table(results: Results) -> str:
    """Per loss branch: balanced / many / medium / few accuracy (%), the paired gain over the CE control with its
    spread and 95% CI (significant rows marked), the seeds behind each row and the chosen config."""
    metric = results.metric
    unit = "pts" if _is_rate(metric) else metric
    best_id = (results.best_trial or {}).get("trial_id")
    on_test = results.selected_on == "test"
    rows = []
    for r in results.rows():
        name = "control (ce)" if r["is_control"] else str(r["branch"])
        if r.get("is_posthoc"):
            name = f"CE + post-hoc LA (tau {r['config'].get('tau')})"
        if r["trial_id"] is not None and r["trial_id"] == best_id:
            name += " *"
        if r.get("significant"):
            name += " !"
        rows.append(
            [
                name,
                _pct(r["balanced_accuracy"]),
                _pct(r["many_shot_accuracy"]),
                _pct(r["medium_shot_accuracy"]),
                _pct(r["few_shot_accuracy"]),
                "ref" if r["is_control"] else gain_text(r, metric),
                "" if r["is_control"] else ci_text(r, metric),
                str(r.get("n_seeds") if r.get("n_seeds") is not None else "-"),
                format_config(r["config"]),
            ]
        )
    headers = [
        "loss",
        "balanced acc",
        "many",
        "medium",
        "few",
        f"gain vs CE ({unit})" + (" [sel. on test]" if on_test else ""),
        "95% CI",
        "seeds",
        "best config",
    ]
    table = format_table(headers, rows, right=[False, True, True, True, True, True, True, True, False])
    shown = "at the selected epoch, mean over each config's seeds" + (" (selected on test)" if on_test else "")
    notes = [
        f"Test accuracy (%) {shown}. Gain: mean ± std of the paired differences with the control of the same seed.",
        selection_note(results),
    ]
    if any(r.get("is_posthoc") for r in results.rows()):
        notes.append(
            "CE + post-hoc LA: the control's logits adjusted by -tau log(prior), tau chosen on validation per seed; "
            "its gain is over the raw control."
        )
    if any(r.get("significant") for r in results.rows()):
        notes.append("! the 95% confidence interval of the gain excludes 0.")
    if best_id is not None:
        notes.append("* the best trial of the job.")
    if not results.complete:
        notes.append(f"Partial results: the job is {results.status}.")
    return table + "\n" + "\n".join(notes)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def progress_line(job: Job, started: float | None = None) -> str:
    p = job.progress
    parts = [
        f"{job.status}",
        f"trials {p.trials_done}/{p.trials_total} done, {p.trials_running} running",
        f"epochs {p.epochs_reported}",
    ]
    if p.best is not None:
        parts.append(f"best {p.metric} {p.best.value:.4f} ({p.best.branch or p.best.trial_id})")
    if started is not None:
        elapsed = int(time.monotonic() - started)
        parts.append(f"{elapsed // 60}:{elapsed % 60:02d}")
    return " | ".join(parts)


class ProgressPrinter:
    """A live one-line display on a terminal; elsewhere (CI logs) one line per finished trial, at most every 10 s."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last: tuple[Any, ...] | None = None
        self._last_print = 0.0
        self._width = 0

    def __call__(self, job: Job) -> None:
        line = progress_line(job, self.started)
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
            self.stream.flush()
            return
        key = (job.status, job.progress.trials_done, job.progress.trials_total)
        now = time.monotonic()
        if key != self._last or now - self._last_print >= 10:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last, self._last_print = key, now

    def finish(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def job_summary(job: Job, base_url: str) -> str:
    p = job.progress
    lines = [
        f"job       {job.id}  ({job.name})",
        f"status    {job.status}",
        f"owner     {job.owner}",
        f"created   {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(job.created_at))}",
        f"progress  trials {p.trials_done}/{p.trials_total} done, {p.trials_running} running; "
        f"{p.epochs_reported} epochs reported",
    ]
    if p.best is not None:
        lines.append(
            f"best      {p.metric} {p.best.value:.4f}  (trial {p.best.trial_id}, {p.best.branch}, epoch {p.best.epoch})"
        )
    if job.error:
        lines.append(f"error     {job.error}")
    lines.append(f"results   {base_url}/jobs/{job.id}/results  ·  web page {base_url}/ui/#/jobs/{job.id}")
    return "\n".join(lines)


def jobs_table(jobs: list[Job]) -> str:
    now = time.time()
    rows = []
    for j in jobs:
        p = j.progress
        best = f"{p.best.value:.4f}" if p.best is not None else "-"
        rows.append(
            [j.id, j.name, str(j.status), f"{p.trials_done}/{p.trials_total}", best, p.metric, _age(now - j.created_at)]
        )
    return format_table(
        ["id", "name", "status", "trials", "best", "metric", "age"],
        rows,
        right=[False, False, False, True, True, False, True],
    )


def catalog_table(entries: list[dict[str, Any]], kind: str) -> str:
    rows = []
    for e in entries:
        params = []
        for p in e.get("parameters", []):
            if p["name"] in ("label", "reweighting"):
                continue
            text = f"{p['name']}={json.dumps(p.get('default'))}" if not p.get("required") else f"{p['name']} (required)"
            params.append(text + ("~" if p.get("searchable") else ""))
        rows.append([e["name"], " ".join(params) or "-", e.get("description", "")])
    note = '\n~ accepts a search domain ({"grid": [...]}, {"loguniform": [lo, hi]}, ...)' if kind == "losses" else ""
    return format_table([kind[:-1], "parameters (defaults)", "description"], rows) + note


def results_csv(results: Results, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    keys = [
        "branch",
        "is_control",
        "trial_id",
        "epoch",
        "metric",
        "best_value",
        "balanced_accuracy",
        "accuracy",
        "many_shot_accuracy",
        "medium_shot_accuracy",
        "few_shot_accuracy",
        "gain",
        "gain_std",
        "gain_ci95_lo",
        "gain_ci95_hi",
        "significant",
        "n_seeds",
        "config_id",
        "config",
    ]
    writer.writerow(keys)
    for r in results.rows():
        writer.writerow(
            [json.dumps(r[k], sort_keys=True) if k == "config" else ("" if r[k] is None else r[k]) for k in keys]
        )


def locations(base_url: str, job_id: str, state_dir: str | None = None) -> str:
    lines = [
        f"Full results: {base_url}/jobs/{job_id}/results  (JSON; or: longtail results {job_id} --json | --csv | "
        f"--plots DIR)",
        f"Web page:     {base_url}/ui/#/jobs/{job_id}",
    ]
    if state_dir:
        lines.append(f"State:        {state_dir}  (job table, Ray Tune experiments and checkpoints)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------
def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2))


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.token or None, timeout=args.timeout, retries=3)


def check_store(settings: Any) -> None:
    """Open (and migrate) the job store before serving: an unreachable database is one clear error, exit 1."""
    from service.store import JobStore, StoreUnavailable

    try:
        JobStore(str(settings.store_url)).close()
    except StoreUnavailable as exc:
        raise LongtailError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from pydantic import ValidationError

    from service.app import create_app
    from service.server import serve
    from service.settings import Settings

    names = {
        "host": "host",
        "port": "port",
        "ray_address": "ray_address",
        "ray_dashboard_url": "ray_dashboard_url",
        "store": "store_url",
        "state_dir": "state_dir",
        "data_root": "data_root",
        "storage_path": "storage_path",
        "num_cpus": "ray_num_cpus",
        "num_gpus": "ray_num_gpus",
        "public_url": "public_url",
        "stop_ray_on_exit": "stop_ray_on_exit",
    }
    overrides = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise LongtailError(f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_store(settings)
    try:
        app = create_app(settings)
    except RuntimeError as exc:
        raise LongtailError(str(exc)) from None
    serve(app, settings, log_level=args.log_level)
    return EXIT_OK


def wait_and_report(client: Client, job: Job, timeout: float | None, state_dir: str | None = None) -> int:
    printer = ProgressPrinter()
    try:
        final = client.wait(job.id, timeout=timeout, on_progress=printer)
    finally:
        printer.finish()
    if final.status != "succeeded":
        reason = (final.error or "").strip().splitlines()
        print(f"job {final.id} {final.status}" + (f": {reason[0]}" if reason else ""), file=sys.stderr)
        if len(reason) > 1:
            print("\n".join(reason[1:]), file=sys.stderr)
        return EXIT_ERROR
    results = client.results(final.id)
    print()
    elapsed = int(time.monotonic() - printer.started)
    print(f"{final.name}: {final.progress.trials_total} trials in {elapsed // 60}:{elapsed % 60:02d}")
    print(results_table(results))
    print()
    print(locations(client.base_url, final.id, state_dir))
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.submit(args.spec, idempotency_key=args.idempotency_key)
        if args.json and not args.wait:
            _print_json(job.raw)
            return EXIT_OK
        print(f"submitted job {job.id} ({job.name}): {job.progress.trials_total} trials, {job.status}")
        if not args.wait:
            print(f"follow it: longtail status {job.id}   results: longtail results {job.id}")
            return EXIT_OK
        return wait_and_report(client, job, args.timeout_wait)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.id:
            job = client.get(args.id)
            if args.json:
                _print_json(job.raw)
            else:
                print(job_summary(job, client.base_url))
            return EXIT_OK
        jobs = client.list(status=args.status or None)
        if args.json:
            _print_json({"items": [j.raw for j in jobs]})
        elif not jobs:
            print("no jobs")
        else:
            print(jobs_table(jobs))
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    with _client(args) as client:
        results = client.results(args.id)
    if args.json:
        _print_json(results.raw)
    elif args.csv:
        results_csv(results, sys.stdout)
    else:
        print(results_table(results))
    if args.plots:
        from service import plots

        try:
            paths = plots.render_all(results.raw, args.plots, args.format)
        except plots.NoFinishedTrials as exc:
            raise LongtailError(f"no plots for job {args.id}: {exc or 'no trial has reported an epoch yet'}") from None
        except OSError as exc:
            raise LongtailError(f"cannot write plots to {args.plots}: {exc}") from None
        print(f"plots: {', '.join(str(p) for p in paths)}", file=sys.stderr if (args.json or args.csv) else sys.stdout)
    return EXIT_OK


def _posthoc_arg(text: str) -> str | float:
    if text in ("auto", "none"):
        return text
    try:
        tau = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--posthoc must be auto, none or a tau >= 0, got {text!r}") from None
    if not 0 <= tau <= 10:
        raise argparse.ArgumentTypeError(f"--posthoc tau must be in [0, 10], got {tau}")
    return tau


def cmd_predict(args: argparse.Namespace) -> int:
    """Download the job's model once into a temporary file, then predict locally (rows or image files)."""
    import tempfile

    from lt_core.inference import InputError, load_model, predict, read_inputs

    if args.top_k < 1:
        raise LongtailError(f"--top-k must be at least 1, got {args.top_k}")

    with tempfile.TemporaryDirectory() as tmp, _client(args) as client:
        path = client.download_model(args.id, Path(tmp) / "model.pt", trial_id=args.trial)
        model, manifest = load_model(path)
    posthoc = args.posthoc if isinstance(args.posthoc, str) else {"tau": args.posthoc}
    try:
        names, inputs = read_inputs(args.input, manifest)
        probs = predict(model, manifest, inputs, posthoc=posthoc)
    except (InputError, ImportError) as exc:
        raise LongtailError(str(exc)) from None
    k = min(args.top_k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    classes = manifest["class_names"]
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["input", "rank", "class", "probability"])
        for name, ps, ix in zip(names, values.tolist(), indices.tolist(), strict=True):
            for rank, (p, i) in enumerate(zip(ps, ix, strict=True), 1):
                writer.writerow([name, rank, classes[i], f"{p:.6f}"])
    else:
        for name, ps, ix in zip(names, values.tolist(), indices.tolist(), strict=True):
            print(f"{name}\t" + "  ".join(f"{classes[i]}:{p:.4f}" for p, i in zip(ps, ix, strict=True)))
    used = manifest["posthoc"] if args.posthoc == "auto" else {"method": "logit_adjustment", "tau": args.posthoc}
    note = "none" if args.posthoc == "none" else f"{used['method']} tau={used['tau']}"
    print(
        f"model: job {manifest['job_id']} trial {manifest['trial_id']} epoch {manifest['epoch']}; post-hoc: {note}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        out = client.delete(args.id)
    if args.json:
        _print_json(out)
    else:
        print(f"job {out['job_id']} deleted ({len(out['removed'])} folders removed)")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel(args.id)
    if args.json:
        _print_json(job.raw)
    else:
        print(f"job {job.id} {job.status}")
    return EXIT_OK


def _catalog(kind: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            entries = getattr(client, kind)()
        if args.json:
            _print_json(entries)
        else:
            print(catalog_table(entries, kind))
        return EXIT_OK

    return run


# -- demo ---------------------------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _parent_pids() -> dict[int, int]:
    """{pid: parent pid} of every process (Linux /proc; empty elsewhere)."""
    out = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name (field 2) may hold spaces and parentheses: split after its closing one.
            fields = entry.read_text().rsplit(")", 1)[1].split()
            out[int(entry.parent.name)] = int(fields[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    parents = _parent_pids()
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in found]
        found += children
        frontier = children
    return found


def stop_process_tree(proc: subprocess.Popen[Any], grace_s: float = 45.0) -> None:
    """SIGTERM the child (the service shuts its Ray down), then SIGKILL its process group and any descendant left."""
    family = descendants(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the child's own process group
    kill_pids(family)  # and anything it started that left the group (pids of live processes we saw)


@contextlib.contextmanager
def local_service(state_dir: Path, port: int, log_path: Path) -> Iterator[subprocess.Popen[Any]]:
    """``python -m service`` on loopback (embedded Ray) in its own process group; always stopped on exit."""
    env = dict(os.environ)
    env.update(
        {
            "LONGTAIL_STATE_DIR": str(state_dir),
            "LONGTAIL_HOST": "127.0.0.1",
            "LONGTAIL_PORT": str(port),
            "LONGTAIL_API_TOKENS": "",  # loopback only, no tokens
            "LONGTAIL_STOP_RAY_ON_EXIT": "true",  # the demo leaves nothing running
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Embedded mode with everything under the state dir, whatever the caller's environment says.
    for key in ("RAY_ADDRESS", "RAY_DASHBOARD_URL", "PUBLIC_URL", "STORE_URL", "STORAGE_PATH", "DATA_ROOT"):
        env.pop(f"LONGTAIL_{key}", None)
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(state_dir),
        )
    try:
        yield proc
    finally:
        stop_process_tree(proc)
        # The service stops its Ray head on a clean exit; if it could not (killed), stop it by its record.
        stop_head(state_dir)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_ready(client: Client, proc: subprocess.Popen[Any], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    last = "not started"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LongtailError(
                f"the service exited with code {proc.returncode} while starting; its log "
                f"({log_path}) ends with:\n{_log_tail(log_path)}"
            )
        try:
            body = client.ready()
            if body.get("status") == "ready":
                return
            last = f"store {body.get('store')}, ray {body.get('ray')}"
        except ServiceUnavailable as exc:
            last = exc.message
        pause.wait(0.5)
    raise LongtailError(f"the service was not ready after {timeout:.0f} s ({last}); log: {log_path}")


def submit_when_accepted(client: Client, spec: dict[str, Any], attempts: int = 6) -> Job:
    """Submit, and resubmit while a fresh local Ray refuses the job (its Jobs agent can lag behind /readyz)."""
    pause = threading.Event()
    for attempt in range(attempts):
        job = client.submit(spec)
        deadline = time.monotonic() + 25
        while (
            not job.done
            and job.progress.trials_running + job.progress.trials_done == 0
            and (time.monotonic() < deadline)
        ):
            pause.wait(0.25)
            job = client.get(job.id)
        refused = job.status == "failed" and "could not submit the job to Ray" in (job.error or "")
        if not refused or attempt == attempts - 1:
            return job
        pause.wait(2.0 * (attempt + 1))
    return job


def cmd_demo(args: argparse.Namespace) -> int:
    spec = quick_demo_spec() if args.quick else DEMO_SPEC
    made_temp = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="longtail-demo-")) if made_temp else Path(args.state_dir).absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    keep = args.keep or not made_temp
    port = args.port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = state_dir / "service.log"
    n_trials = None
    t0 = time.monotonic()
    code = EXIT_ERROR
    try:
        print(f"Starting the longtail service and a local Ray on {base_url} (state: {state_dir}) ...", flush=True)
        with local_service(state_dir, port, log_path) as proc, Client(base_url, retries=2, timeout=30) as client:
            wait_ready(client, proc, log_path, READY_TIMEOUT_S)
            print(f"Service ready after {time.monotonic() - t0:.0f} s.", flush=True)
            job = submit_when_accepted(client, spec)
            n_trials = job.progress.trials_total
            losses = ", ".join(b.get("label") or b["name"] for b in spec["losses"])
            print(
                f"Submitted job {job.id}: {n_trials} trials of {spec['train']['epochs']} epochs on digits_lt "
                f"(imbalance factor {spec['dataset']['imbalance_factor']}), comparing {losses} with a "
                "cross-entropy control.",
                flush=True,
            )
            try:
                code = wait_and_report(client, job, args.timeout_wait, str(state_dir) if keep else None)
            except LongtailError as exc:
                if proc.poll() is None:
                    raise
                keep = True  # the service died: keep its log and state for a look
                raise LongtailError(
                    f"the service exited unexpectedly (code {proc.returncode}) while running the job: {exc}\n"
                    f"its log ({log_path}) ends with:\n{_log_tail(log_path)}"
                ) from None
            if code != EXIT_OK:
                print(f"service log ({log_path}) ends with:\n{_log_tail(log_path)}", file=sys.stderr)
            print("Stopping the service and its Ray ...", flush=True)
    finally:
        if not keep:
            shutil.rmtree(state_dir, ignore_errors=True)
    total = time.monotonic() - t0
    evaluation = spec.get("evaluation") or {}
    repeats = spec["tune"].get("repeats", 1)
    chosen = "on test" if evaluation.get("selection") == "test" else "on validation, test only reported"
    print(
        f"Demo finished in {int(total) // 60}:{int(total) % 60:02d}; epochs, configs and the best trial were "
        f"selected {chosen}, over {repeats} seed{'s' if repeats != 1 else ''} per config"
        + (
            f"; the state is kept in {state_dir} (longtail serve --state-dir {state_dir} serves it again)."
            if keep
            else "; the service and its state are gone (run with --keep to keep the results and serve them again)."
        )
    )
    return code


# --------------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longtail", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("LONGTAIL_URL") or DEFAULT_URL,
        help="the service (env LONGTAIL_URL; default %(default)s)",
    )
    parser.add_argument("--token", default=os.environ.get("LONGTAIL_TOKEN"), help="bearer token (env LONGTAIL_TOKEN)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the service (uvicorn)")
    p.add_argument("--host", help="bind address (default LONGTAIL_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default LONGTAIL_PORT or 8000)")
    p.add_argument("--ray-address", help="an existing Ray cluster ('host:6379'); default: start an embedded Ray")
    p.add_argument("--ray-dashboard-url", help="its dashboard / Jobs API (default http://<host>:8265)")
    p.add_argument("--store", help="SQLAlchemy URL of the job table (default sqlite in the state dir)")
    p.add_argument("--state-dir", help="where the service keeps its state (default ./.longtail)")
    p.add_argument("--data-root", help="dataset files live under it (default <state-dir>/data)")
    p.add_argument("--storage-path", help="Ray Tune experiments (default <state-dir>/ray_results)")
    p.add_argument("--public-url", help="how job drivers reach the service (default http://127.0.0.1:<port>)")
    p.add_argument("--num-cpus", type=int, help="embedded Ray: CPUs to use (default all)")
    p.add_argument("--num-gpus", type=int, help="embedded Ray: GPUs to use (default detected)")
    p.add_argument(
        "--stop-ray-on-exit",
        action="store_true",
        default=None,
        help="embedded Ray: stop it (and its jobs) when the service stops; by default it keeps running, and the "
        "next start reattaches to it (env LONGTAIL_STOP_RAY_ON_EXIT)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("submit", help="submit a job spec (YAML or JSON file)")
    p.add_argument("spec", help="the spec file")
    p.add_argument("--wait", action="store_true", help="follow the job, then print the results table")
    p.add_argument("--timeout-wait", type=float, default=None, metavar="S", help="give up waiting after S seconds")
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    p.add_argument("--json", action="store_true", help="print the created job's JSON (without --wait)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="one job's status and progress, or a list of jobs")
    p.add_argument("id", nargs="?", help="a job id (default: list the jobs)")
    p.add_argument(
        "--status",
        action="append",
        choices=["queued", "running", "succeeded", "failed", "cancelled"],
        help="list only jobs with this status (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the REST payload")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("results", help="a job's results table")
    p.add_argument("id")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print exactly the REST payload")
    fmt.add_argument("--csv", action="store_true", help="one CSV row per loss branch")
    p.add_argument("--plots", metavar="DIR", help="also write the figures (per-class, curves, shots, calibration)")
    p.add_argument("--format", choices=["png", "svg"], default="png", help="figure format (default png)")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("delete", help="delete a finished job, its checkpoints and its rows")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("predict", help="classify rows (.npz/.csv/.parquet) or images with a job's model")
    p.add_argument("id", help="the job")
    p.add_argument("input", help="an .npz (array x), .csv or .parquet of rows, an image file, or a folder of images")
    p.add_argument("--trial", help="this trial's model (default: the job's best finished trial)")
    p.add_argument(
        "--posthoc",
        type=_posthoc_arg,
        default="auto",
        help="auto (the adjustment chosen on validation, default), none, or a logit-adjustment tau",
    )
    p.add_argument("--top-k", type=int, default=5, help="classes per input (default %(default)s)")
    p.add_argument("--csv", action="store_true", help="CSV: input, rank, class, probability")
    p.set_defaults(func=cmd_predict)

    for kind, text in (("losses", "loss branches"), ("datasets", "datasets"), ("models", "models")):
        p = sub.add_parser(kind, help=f"the {text} a spec can name")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_catalog(kind))

    p = sub.add_parser("demo", help="run a local service + Ray and compare nine long-tail losses on digits")
    p.add_argument("--quick", action="store_true", help="a much smaller search (CI)")
    p.add_argument("--keep", action="store_true", help="keep the state directory")
    p.add_argument("--state-dir", help="use (and keep) this state directory")
    p.add_argument("--port", type=int, help="service port (default: a free one)")
    p.add_argument("--timeout-wait", type=float, default=None, metavar="S", help="give up after S seconds")
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """The ``longtail`` console script; returns the exit code (and exits with it when run as a script)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)  # clean up (demo's child) like Ctrl-C
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except LongtailError as exc:
        message = str(exc)
        first, _, rest = message.partition("\n")
        print(f"error: {_one_line(first) if not rest else first}", file=sys.stderr)
        if rest:
            print(rest, file=sys.stderr)
        code = EXIT_ERROR
    except BrokenPipeError:
        code = EXIT_OK
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
