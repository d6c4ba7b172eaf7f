"""What the CLI prints: Rich tables (results, jobs, catalogs), the job summary, CSV, and the live progress display.

Tables are rendered to text at their natural width (a pipe or a log gets whole lines, as ``--csv`` readers and greps
expect); on a terminal the header is bold. Config keys are shown exactly as the service stores them
(``loss.gamma``, ``branch.start_epoch``, ``train.lr``): the CLI does not rename parameters.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from rich.box import Box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from service.client import Job, Results

# A header, a rule of dashes under each column, the rows; columns two spaces apart, no frame.
PLAIN = Box("    \n    \n -  \n    \n    \n    \n    \n    \n")

CSV_KEYS = (
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
)


def make_table(headers: Sequence[str], right: Sequence[bool] | None = None) -> Table:
    table = Table(box=PLAIN, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    for header, align_right in zip(headers, right or [False] * len(headers), strict=True):
        table.add_column(header, justify="right" if align_right else "left", no_wrap=True)
    return table


def render(table: Table, color: bool = False) -> str:
    """The table as text at its natural width (no wrapping), trailing spaces stripped; ANSI styles if ``color``."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=100_000,
        markup=False,  # cells hold "[+1.1, +9.3]": text, not markup
        highlight=False,
        emoji=False,
        force_terminal=color,
        color_system="standard" if color else None,
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").split("\n"))


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | None = None, color: bool = False
) -> str:
    """An aligned text table: a header, a rule, the rows (None cells are empty)."""
    table = make_table(headers, right)
    for row in rows:
        table.add_row(*("" if c is None else str(c) for c in row))
    return render(table, color)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def _is_rate(metric: str) -> bool:
    return metric.endswith("accuracy") or metric == "macro_f1"


def _gain(value: Any, metric: str) -> str:
    if value is None:
        return "-"
    return f"{100 * float(value):+.1f}" if _is_rate(metric) else f"{float(value):+.4f}"


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def format_config(config: dict[str, Any] | None) -> str:
    """``{"loss.gamma": 2.0, "branch.start_epoch": 5}`` -> ``loss.gamma=2 branch.start_epoch=5``.

    Every key exactly as stored, in order. Left out, as the web page does: the identity ``config_id`` (not a
    parameter) and ``branch.reweighting=none`` (the default, on every row otherwise).
    """
    if not config:
        return ""
    defaults = {"branch.reweighting": "none", "reweighting": "none"}
    return " ".join(
        f"{key}={_num(value)}" for key, value in config.items() if key != "config_id" and defaults.get(key) != value
    )


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


def results_table(results: Results, color: bool = False) -> str:
    """Per loss branch: balanced / many / medium / few accuracy (%), the paired gain over the CE control with its
    spread and 95% CI (significant rows marked), the seeds behind each row and the chosen config (keys as stored)."""
    metric = results.metric
    unit = "pts" if _is_rate(metric) else metric
    best_id = results.best_trial.trial_id if results.best_trial is not None else None
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
    table = format_table(headers, rows, right=[False, True, True, True, True, True, True, True, False], color=color)
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


def results_csv(results: Results, out: TextIO) -> None:
    """One CSV row per loss branch (the control first); ``config`` is the stored config as JSON."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_KEYS)
    for r in results.rows():
        writer.writerow(
            [json.dumps(r[k], sort_keys=True) if k == "config" else ("" if r[k] is None else r[k]) for k in CSV_KEYS]
        )


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def jobs_table(jobs: list[Job], color: bool = False) -> str:
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
        color=color,
    )


def catalog_table(entries: list[dict[str, Any]], kind: str, color: bool = False) -> str:
    """The service's ``/losses``, ``/datasets`` or ``/models``: name, parameters with their defaults, description."""
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
    return format_table([kind[:-1], "parameters (defaults)", "description"], rows, color=color) + note


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


def locations(base_url: str, job_id: str, state_dir: str | None = None) -> str:
    lines = [
        f"Full results: {base_url}/jobs/{job_id}/results  (JSON; or: longtail results {job_id} --json | --csv | "
        f"--plots DIR)",
        f"Web page:     {base_url}/ui/#/jobs/{job_id}",
    ]
    if state_dir:
        lines.append(f"State:        {state_dir}  (job table, Ray Tune experiments and checkpoints)")
    return "\n".join(lines)


def _best_text(job: Job) -> str:
    p = job.progress
    return "" if p.best is None else f"best {p.metric} {p.best.value:.4f} ({p.best.branch or p.best.trial_id})"


def progress_line(job: Job, started: float | None = None) -> str:
    p = job.progress
    parts = [
        f"{job.status}",
        f"trials {p.trials_done}/{p.trials_total} done, {p.trials_running} running",
        f"epochs {p.epochs_reported}",
    ]
    if p.best is not None:
        parts.append(_best_text(job))
    if started is not None:
        elapsed = int(time.monotonic() - started)
        parts.append(f"{elapsed // 60}:{elapsed % 60:02d}")
    return " | ".join(parts)


class ProgressDisplay:
    """A job's progress while ``submit --wait`` or the demo waits: a Rich progress bar of the trials on a terminal;
    elsewhere (CI logs, pipes) one line per change of status or finished trial, at most every 10 s otherwise.

    Call it with each ``Job`` state (``Client.wait``'s ``on_progress``); ``finish()`` ends the display.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last: tuple[Any, ...] | None = None
        self._last_print = 0.0
        self._bar: tuple[Progress, TaskID] | None = None  # on a terminal, once the first state has come

    def __call__(self, job: Job) -> None:
        if self.tty:
            self._live(job)
            return
        key = (job.status, job.progress.trials_done, job.progress.trials_total)
        now = time.monotonic()
        if key != self._last or now - self._last_print >= 10:
            self.stream.write(progress_line(job, self.started) + "\n")
            self.stream.flush()
            self._last, self._last_print = key, now

    def _live(self, job: Job) -> None:
        p = job.progress
        # The two task fields the columns below show; passed by name (Progress takes them as **fields).
        status = str(job.status)
        detail = f"{p.trials_running} running, {p.epochs_reported} epochs  {_best_text(job)}".rstrip()
        if self._bar is None:
            progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.fields[status]:<9}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("trials", markup=False),
                TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}", markup=False),
                console=Console(file=self.stream, highlight=False, markup=False),
                redirect_stdout=False,
                redirect_stderr=False,
            )
            progress.start()
            task = progress.add_task(
                "trials", total=p.trials_total or None, completed=p.trials_done, status=status, detail=detail
            )
            self._bar = progress, task
        progress, task = self._bar
        progress.update(task, completed=p.trials_done, total=p.trials_total or None, status=status, detail=detail)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar[0].stop()
            self._bar = None
