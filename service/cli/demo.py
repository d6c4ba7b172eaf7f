"""``longtail demo``: a local service with its own Ray, the nine-loss digits comparison, the results table.

The spec is the same job as examples/digits-demo.yaml (a test keeps the two equal), built in code so that the demo
works from an installed package too. Running it needs the server and training extras; the spec does not.
"""

from __future__ import annotations

import copy
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tenacity import Retrying

from service._client_core import Transient
from service.client import Client, Job, LongtailError, ServiceUnavailable, retry_policy

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
READY_TIMEOUT_S = 180.0


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


def wait_ready(client: Client, proc: Any, log_path: Path, timeout: float) -> None:
    """Poll ``/readyz`` until the child service is ready; fail with its log's tail if it exits first."""
    from service.cli.supervise import log_tail

    deadline = time.monotonic() + timeout
    pause = threading.Event()
    last = "not started"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LongtailError(
                f"the service exited with code {proc.returncode} while starting; its log "
                f"({log_path}) ends with:\n{log_tail(log_path)}"
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
    """Submit, and resubmit while a fresh local Ray refuses the job (its Jobs agent can lag behind /readyz).

    The resubmissions follow the clients' retry policy (``retry_policy``: exponential backoff from 2 s); a job
    still refused after ``attempts`` submissions is returned as it is (failed, with Ray's reason).
    """
    pause = threading.Event()
    last: Job | None = None

    def submit_and_watch() -> Job:
        nonlocal last
        job = client.submit(spec)
        deadline = time.monotonic() + 25
        while (
            not job.done
            and job.progress.trials_running + job.progress.trials_done == 0
            and (time.monotonic() < deadline)
        ):
            pause.wait(0.25)
            job = client.get(job.id)
        last = job
        if job.status == "failed" and "could not submit the job to Ray" in (job.error or ""):
            raise Transient("Ray refused the job", LongtailError(job.error or "refused"))
        return job

    try:
        for attempt in Retrying(**retry_policy(attempts - 1, backoff=2.0, max_backoff=10.0, on_retry=None)):
            with attempt:
                return submit_and_watch()
    except Transient:
        assert last is not None
        return last
    raise AssertionError("the retry policy neither returned nor raised")  # pragma: no cover


def run_demo(*, quick: bool, keep: bool, state_dir: str | None, port: int | None, timeout_wait: float | None) -> int:
    """The whole demo; returns the exit code (0 when the job succeeded)."""
    from service.cli.commands import EXIT_ERROR, EXIT_OK, wait_and_report
    from service.cli.supervise import free_port, local_service, log_tail

    spec = quick_demo_spec() if quick else DEMO_SPEC
    made_temp = state_dir is None
    state = Path(tempfile.mkdtemp(prefix="longtail-demo-")) if state_dir is None else Path(state_dir).absolute()
    state.mkdir(parents=True, exist_ok=True)
    keep = keep or not made_temp
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = state / "service.log"
    t0 = time.monotonic()
    code = EXIT_ERROR
    try:
        print(f"Starting the longtail service and a local Ray on {base_url} (state: {state}) ...", flush=True)
        with local_service(state, port, log_path) as proc, Client(base_url, retries=2, timeout=30) as client:
            wait_ready(client, proc, log_path, READY_TIMEOUT_S)
            print(f"Service ready after {time.monotonic() - t0:.0f} s.", flush=True)
            job = submit_when_accepted(client, spec)
            losses = ", ".join(b.get("label") or b["name"] for b in spec["losses"])
            print(
                f"Submitted job {job.id}: {job.progress.trials_total} trials of {spec['train']['epochs']} epochs on "
                f"digits_lt (imbalance factor {spec['dataset']['imbalance_factor']}), comparing {losses} with a "
                "cross-entropy control.",
                flush=True,
            )
            try:
                code = wait_and_report(client, job, timeout_wait, str(state) if keep else None)
            except LongtailError as exc:
                if proc.poll() is None:
                    raise
                keep = True  # the service died: keep its log and state for a look
                raise LongtailError(
                    f"the service exited unexpectedly (code {proc.returncode}) while running the job: {exc}\n"
                    f"its log ({log_path}) ends with:\n{log_tail(log_path)}"
                ) from None
            if code != EXIT_OK:
                print(f"service log ({log_path}) ends with:\n{log_tail(log_path)}", file=sys.stderr)
            print("Stopping the service and its Ray ...", flush=True)
    finally:
        if not keep:
            shutil.rmtree(state, ignore_errors=True)
    total = time.monotonic() - t0
    evaluation = spec.get("evaluation") or {}
    repeats = spec["tune"].get("repeats", 1)
    chosen = "on test" if evaluation.get("selection") == "test" else "on validation, test only reported"
    print(
        f"Demo finished in {int(total) // 60}:{int(total) % 60:02d}; epochs, configs and the best trial were "
        f"selected {chosen}, over {repeats} seed{'s' if repeats != 1 else ''} per config"
        + (
            f"; the state is kept in {state} (longtail serve --state-dir {state} serves it again)."
            if keep
            else "; the service and its state are gone (run with --keep to keep the results and serve them again)."
        )
    )
    return code
