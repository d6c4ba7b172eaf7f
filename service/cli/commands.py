"""The ``longtail`` commands (Typer). The client commands need only the base install; ``serve``, ``demo``,
``predict`` and ``results --plots`` say which extra to install when theirs is missing.

The catalog commands (``losses``, ``datasets``, ``models``) always ask the service (``GET /losses``, ...): what a
spec can name is what the service accepts, and the local catalog would need torch.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from service.cli.formatting import (
    ProgressDisplay,
    catalog_table,
    job_summary,
    jobs_table,
    locations,
    results_csv,
    results_table,
)
from service.client import DEFAULT_URL, Client, Job, LongtailError
from service.status import JobStatus

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

SERVER_EXTRA = "pip install 'longtail-service[server,train]' (or 'longtail-service[all]')"
# what `serve` and `demo` import, by the extra that installs it
NEEDS = {
    "server": ("fastapi", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings"),
    "train": ("torch", "ray", "numpy"),
}

app = typer.Typer(
    name="longtail",
    help="Run the longtail service, submit and follow jobs, read results, run the demo.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass(frozen=True)
class Globals:
    url: str
    token: str | None
    timeout: float

    def client(self) -> Client:
        return Client(self.url, self.token or None, timeout=self.timeout, retries=3)


# --status choices: the job statuses (service.status), as Typer wants them (a str Enum)
StatusChoice = Enum("StatusChoice", {s.value: s.value for s in JobStatus}, type=str)  # type: ignore[misc]


class FigureFormat(str, Enum):
    png = "png"
    svg = "svg"


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def require(command: str, *extras: str, hint: str = SERVER_EXTRA) -> None:
    """A clear error (exit 1) naming the extra to install when ``command`` needs modules that are not installed."""
    missing = [m for extra in extras for m in NEEDS.get(extra, (extra,)) if importlib.util.find_spec(m) is None]
    if missing:
        raise LongtailError(f"longtail {command} needs {', '.join(missing)}, not installed here: {hint}")


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2))


def _color() -> bool:
    return sys.stdout.isatty()


def command(name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """``app.command`` for a function returning the exit code; a closed pipe (``| head``) is not an error."""

    def register(func: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(func)
        def run(*args: Any, **options: Any) -> int:
            try:
                return func(*args, **options)
            except BrokenPipeError:
                return EXIT_OK

        app.command(name, **kwargs)(run)
        return func

    return register


@app.callback()
def root(
    ctx: typer.Context,
    url: str = typer.Option(DEFAULT_URL, envvar="LONGTAIL_URL", help="The service.", show_envvar=True),
    token: str | None = typer.Option(None, envvar="LONGTAIL_TOKEN", help="Bearer token.", show_envvar=True),
    timeout: float = typer.Option(30.0, help="Seconds per request."),
) -> None:
    """Run the longtail service, submit and follow jobs, read results, run the demo.

    Errors are one line on stderr and a non-zero exit: 1 for errors, 2 for usage, 130 when interrupted.
    """
    ctx.obj = Globals(url, token, timeout)


# -- the service --------------------------------------------------------------------------------------------------
@command("serve", help="Run the service (uvicorn).")
def serve(
    host: str | None = typer.Option(None, help="Bind address (default LONGTAIL_HOST or 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default LONGTAIL_PORT or 8000)."),
    ray_address: str | None = typer.Option(
        None, help="An existing Ray cluster ('host:6379'); default: start an embedded Ray."
    ),
    ray_dashboard_url: str | None = typer.Option(None, help="Its dashboard / Jobs API (default http://<host>:8265)."),
    store: str | None = typer.Option(None, help="SQLAlchemy URL of the job table (default sqlite in the state dir)."),
    state_dir: str | None = typer.Option(None, help="Where the service keeps its state (default ./.longtail)."),
    data_root: str | None = typer.Option(None, help="Dataset files live under it (default <state-dir>/data)."),
    storage_path: str | None = typer.Option(None, help="Ray Tune experiments (default <state-dir>/ray_results)."),
    public_url: str | None = typer.Option(
        None, help="How job drivers reach the service (default http://127.0.0.1:<port>)."
    ),
    num_cpus: int | None = typer.Option(None, help="Embedded Ray: CPUs to use (default all)."),
    num_gpus: int | None = typer.Option(None, help="Embedded Ray: GPUs to use (default detected)."),
    stop_ray_on_exit: bool | None = typer.Option(
        None,
        "--stop-ray-on-exit",
        help="Embedded Ray: stop it (and its jobs) when the service stops; by default it keeps running, and the next "
        "start reattaches to it (env LONGTAIL_STOP_RAY_ON_EXIT).",
    ),
    log_level: LogLevel = typer.Option(LogLevel.info, help="Log level."),
) -> int:
    require("serve", "server", "train")
    options = {
        "host": host,
        "port": port,
        "ray_address": ray_address,
        "ray_dashboard_url": ray_dashboard_url,
        "store_url": store,
        "state_dir": state_dir,
        "data_root": data_root,
        "storage_path": storage_path,
        "ray_num_cpus": num_cpus,
        "ray_num_gpus": num_gpus,
        "public_url": public_url,
        "stop_ray_on_exit": stop_ray_on_exit,
    }
    run_server({field: value for field, value in options.items() if value is not None}, log_level.value)
    return EXIT_OK


def run_server(overrides: dict[str, Any], log_level: str) -> None:
    """Settings from the environment plus ``overrides`` (unset options leave the setting alone); then serve."""
    from pydantic import ValidationError

    from service.app import create_app
    from service.server import serve as serve_app
    from service.settings import Settings

    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise LongtailError(f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_store(settings)
    try:
        created = create_app(settings)
    except RuntimeError as exc:
        raise LongtailError(str(exc)) from None
    serve_app(created, settings, log_level=log_level)


def check_store(settings: Any) -> None:
    """Open (and migrate) the job store before serving: an unreachable database is one clear error, exit 1."""
    from service.store import JobStore, StoreUnavailable

    try:
        JobStore(str(settings.store_url)).close()
    except StoreUnavailable as exc:
        raise LongtailError(str(exc)) from None


# -- jobs ---------------------------------------------------------------------------------------------------------
def wait_and_report(client: Client, job: Job, timeout: float | None, state_dir: str | None = None) -> int:
    """Follow the job with the progress display; then its results table (exit 0), or why it did not succeed (1)."""
    display = ProgressDisplay()
    try:
        final = client.wait(job.id, timeout=timeout, on_progress=display)
    finally:
        display.finish()
    if final.status != "succeeded":
        reason = (final.error or "").strip().splitlines()
        print(f"job {final.id} {final.status}" + (f": {reason[0]}" if reason else ""), file=sys.stderr)
        if len(reason) > 1:
            print("\n".join(reason[1:]), file=sys.stderr)
        return EXIT_ERROR
    results = client.results(final.id)
    print()
    elapsed = int(time.monotonic() - display.started)
    print(f"{final.name}: {final.progress.trials_total} trials in {elapsed // 60}:{elapsed % 60:02d}")
    print(results_table(results, color=_color()))
    print()
    print(locations(client.base_url, final.id, state_dir))
    return EXIT_OK


@command("submit", help="Submit a job spec (YAML or JSON file).")
def submit(
    ctx: typer.Context,
    spec: str = typer.Argument(..., metavar="SPEC", help="The spec file."),
    wait: bool = typer.Option(False, "--wait", help="Follow the job, then print the results table."),
    timeout_wait: float | None = typer.Option(None, metavar="S", help="Give up waiting after S seconds."),
    idempotency_key: str | None = typer.Option(None, help="Resubmitting with the same key returns the same job."),
    as_json: bool = typer.Option(False, "--json", help="Print the created job's JSON (without --wait)."),
) -> int:
    with ctx.obj.client() as client:
        job = client.submit(spec, idempotency_key=idempotency_key)
        if as_json and not wait:
            _print_json(job.raw)
            return EXIT_OK
        print(f"submitted job {job.id} ({job.name}): {job.progress.trials_total} trials, {job.status}")
        if not wait:
            print(f"follow it: longtail status {job.id}   results: longtail results {job.id}")
            return EXIT_OK
        return wait_and_report(client, job, timeout_wait)


@command("status", help="One job's status and progress, or a list of jobs.")
def status(
    ctx: typer.Context,
    job_id: str | None = typer.Argument(None, metavar="ID", help="A job id (default: list the jobs)."),
    statuses: list[StatusChoice] | None = typer.Option(  # type: ignore[valid-type]
        None, "--status", help="List only jobs with this status (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the REST payload."),
) -> int:
    with ctx.obj.client() as client:
        if job_id:
            job = client.get(job_id)
            if as_json:
                _print_json(job.raw)
            else:
                print(job_summary(job, client.base_url))
            return EXIT_OK
        jobs = client.list(status=[s.value for s in statuses] if statuses else None)
    if as_json:
        _print_json({"items": [j.raw for j in jobs]})
    elif not jobs:
        print("no jobs")
    else:
        print(jobs_table(jobs, color=_color()))
    return EXIT_OK


@command("results", help="A job's results table.")
def results(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = typer.Option(False, "--json", help="Print exactly the REST payload."),
    as_csv: bool = typer.Option(False, "--csv", help="One CSV row per loss branch."),
    plots: str | None = typer.Option(
        None, metavar="DIR", help="Also write the figures (per-class, curves, shots, calibration)."
    ),
    fmt: FigureFormat = typer.Option(FigureFormat.png, "--format", help="Figure format."),
) -> int:
    if as_json and as_csv:
        raise typer.BadParameter("--json and --csv cannot be used together", param_hint="'--json' / '--csv'")
    if plots:
        require("results --plots", "matplotlib", hint="pip install 'longtail-service[plots]'")
    with ctx.obj.client() as client:
        res = client.results(job_id)
    if as_json:
        _print_json(res.raw)
    elif as_csv:
        results_csv(res, sys.stdout)
    else:
        print(results_table(res, color=_color()))
    if plots:
        from service import plots as figures

        try:
            paths = figures.render_all(res.raw, plots, fmt.value)
        except figures.NoFinishedTrials as exc:
            raise LongtailError(f"no plots for job {job_id}: {exc or 'no trial has reported an epoch yet'}") from None
        except OSError as exc:
            raise LongtailError(f"cannot write plots to {plots}: {exc}") from None
        print(f"plots: {', '.join(str(p) for p in paths)}", file=sys.stderr if (as_json or as_csv) else sys.stdout)
    return EXIT_OK


@command("cancel", help="Cancel a queued or running job.")
def cancel(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = typer.Option(False, "--json", help="Print the job's JSON."),
) -> int:
    with ctx.obj.client() as client:
        job = client.cancel(job_id)
    if as_json:
        _print_json(job.raw)
    else:
        print(f"job {job.id} {job.status}")
    return EXIT_OK


@command("delete", help="Delete a finished job, its checkpoints and its rows.")
def delete(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = typer.Option(False, "--json", help="Print the service's answer."),
) -> int:
    with ctx.obj.client() as client:
        out = client.delete(job_id)
    if as_json:
        _print_json(out)
    else:
        print(f"job {out['job_id']} deleted ({len(out['removed'])} folders removed)")
    return EXIT_OK


def _posthoc_arg(text: str) -> str | float:
    if text in ("auto", "none"):
        return text
    try:
        tau = float(text)
    except ValueError:
        raise typer.BadParameter(f"must be auto, none or a tau >= 0, got {text!r}") from None
    if not 0 <= tau <= 10:
        raise typer.BadParameter(f"tau must be in [0, 10], got {tau}")
    return tau


@command("predict", help="Classify rows (.npz/.csv/.parquet) or images with a job's model.")
def predict(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID", help="The job."),
    source: str = typer.Argument(
        ..., metavar="INPUT", help="An .npz (array x), .csv or .parquet of rows, an image file, or a folder of images."
    ),
    trial: str | None = typer.Option(None, help="This trial's model (default: the job's best finished trial)."),
    posthoc: str = typer.Option(
        "auto",
        parser=_posthoc_arg,
        help="auto (the adjustment chosen on validation), none, or a logit-adjustment tau.",
    ),
    top_k: int = typer.Option(5, help="Classes per input."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV: input, rank, class, probability."),
) -> int:
    """Download the job's model once into a temporary file, then predict locally (rows or image files)."""
    import tempfile

    require("predict", "train", hint="pip install 'longtail-service[train]'")
    from lt_core.inference import InputError, load_model, read_inputs
    from lt_core.inference import predict as predict_probs

    if top_k < 1:
        raise LongtailError(f"--top-k must be at least 1, got {top_k}")
    with tempfile.TemporaryDirectory() as tmp, ctx.obj.client() as client:
        path = client.download_model(job_id, Path(tmp) / "model.pt", trial_id=trial)
        model, manifest = load_model(path)
    adjust: Any = posthoc if isinstance(posthoc, str) else {"tau": posthoc}
    try:
        names, inputs = read_inputs(source, manifest)
        probs = predict_probs(model, manifest, inputs, posthoc=adjust)
    except (InputError, ImportError) as exc:
        raise LongtailError(str(exc)) from None
    k = min(top_k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    classes = manifest["class_names"]
    if as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["input", "rank", "class", "probability"])
        for name, ps, ix in zip(names, values.tolist(), indices.tolist(), strict=True):
            for rank, (p, i) in enumerate(zip(ps, ix, strict=True), 1):
                writer.writerow([name, rank, classes[i], f"{p:.6f}"])
    else:
        for name, ps, ix in zip(names, values.tolist(), indices.tolist(), strict=True):
            print(f"{name}\t" + "  ".join(f"{classes[i]}:{p:.4f}" for p, i in zip(ps, ix, strict=True)))
    used = manifest["posthoc"] if posthoc == "auto" else {"method": "logit_adjustment", "tau": posthoc}
    note = "none" if posthoc == "none" else f"{used['method']} tau={used['tau']}"
    print(
        f"model: job {manifest['job_id']} trial {manifest['trial_id']} epoch {manifest['epoch']}; post-hoc: {note}",
        file=sys.stderr,
    )
    return EXIT_OK


def _catalog(kind: str, text: str) -> None:
    @command(kind, help=f"The {text} a spec can name (from the service).")
    def show(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print the REST payload.")) -> int:
        with ctx.obj.client() as client:
            entries = getattr(client, kind)()
        if as_json:
            _print_json(entries)
        else:
            print(catalog_table(entries, kind, color=_color()))
        return EXIT_OK


for _kind, _text in (("losses", "loss branches"), ("datasets", "datasets"), ("models", "models")):
    _catalog(_kind, _text)


# -- the demo -----------------------------------------------------------------------------------------------------
@command("demo", help="Run a local service + Ray and compare nine long-tail losses on digits.")
def demo(
    quick: bool = typer.Option(False, "--quick", help="A much smaller search (CI)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the state directory."),
    state_dir: str | None = typer.Option(None, help="Use (and keep) this state directory."),
    port: int | None = typer.Option(None, help="Service port (default: a free one)."),
    timeout_wait: float | None = typer.Option(None, metavar="S", help="Give up after S seconds."),
) -> int:
    require("demo", "server", "train", "psutil")
    from service.cli.demo import run_demo

    return run_demo(quick=quick, keep=keep, state_dir=state_dir, port=port, timeout_wait=timeout_wait)


# -- entry point --------------------------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """The ``longtail`` console script; returns the exit code (usage errors exit 2 through ``SystemExit``)."""
    cli = typer.main.get_command(app)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)  # clean up (demo's child) like Ctrl-C
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        code = cli.main(args=args, prog_name="longtail", standalone_mode=False)
    except (typer.Exit, typer.Abort) as exc:
        code = getattr(exc, "exit_code", EXIT_INTERRUPTED)
        if code == EXIT_INTERRUPTED:  # Typer's answer to Ctrl-C (and to our SIGTERM)
            print("\ninterrupted", file=sys.stderr)
    except LongtailError as exc:
        message = str(exc)
        first, _, rest = message.partition("\n")
        print(f"error: {_one_line(first) if not rest else first}", file=sys.stderr)
        if rest:
            print(rest, file=sys.stderr)
        code = EXIT_ERROR
    except BrokenPipeError:
        code = EXIT_OK
    except Exception as exc:
        # usage: an unknown option, a missing argument, a bad value (click's UsageError, vendored by recent Typer
        # releases as typer's own: recognised by what it has, so that either works)
        if not (hasattr(exc, "show") and hasattr(exc, "exit_code")):
            raise
        exc.show()
        raise SystemExit(exc.exit_code) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(code or EXIT_OK)
