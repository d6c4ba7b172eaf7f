"""What a trial costs beyond its training: a small-data search on Ray against the same trainings run back to back.

All phases run in this one process run, on this machine, each against its own baseline:

1. **The 12-trial digits job** (the demo's losses with three ``logit_adjusted`` taus: 12 trials of 12 epochs, one
   worker each) through ``jobs.run_job`` on a local Ray, against the same 12 trainings run back to back as plain
   ``lt_core.engine.fit`` calls in this process (data already loaded). Printed: both walls, their ratio, the
   overhead per trial ``(job wall - plain wall) / trials``, and each trial's start overhead (``trial_started`` to
   its first epoch event, less that epoch's own time): mean and p90.
   ``--legacy-trials N`` also runs the first N of those trials the way every trial ran before (a one-worker
   ``TorchTrainer`` per trial, ``in_process=False``), against their own plain wall.
2. **2-worker DDP trials** (``--ddp-trials``, default 3, 4 epochs): the same comparison (trials always run as
   ``TorchTrainer`` runs with two workers of 0.99 CPU; one at a time on 2 cores).
3. **Submit -> first epoch** through the service: ``python -m service`` (uvicorn) on the same Ray, warmed by one
   job; then ``--submits`` digits jobs submitted one after another, each timed from ``POST /jobs`` until
   ``GET /jobs/{id}`` counts a reported epoch (polled every 50 ms).
4. **The demo** (``--demo``): ``longtail demo`` as a user runs it (its own service and Ray), wall time.

    python benchmarks/bench_trials.py [--legacy-trials 4] [--ddp-trials 3] [--submits 3] [--demo]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def twelve_trial_spec() -> dict[str, Any]:
    import yaml

    spec = yaml.safe_load((ROOT / "examples" / "digits-demo.yaml").read_text())
    spec["losses"][-1]["tau"] = {"grid": [1.0, 1.5, 2.0]}  # control + 11 loss trials = 12
    spec["tune"].pop("max_concurrent_trials", None)  # as many as the cluster holds
    spec["tune"]["repeats"] = 1  # one seed per config: 12 trials
    return spec


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.9 * len(values))) - 1)] if values else float("nan")


def plain_wall(spec: Any, trials: list[Any]) -> float:
    """The same trainings as plain ``fit`` calls, back to back, with the data already loaded."""
    import torch

    from jobs.train import fit_config, trial_data
    from lt_core.engine import fit

    # the trial's data: with the validation split the job evaluates each epoch too
    data = trial_data(spec.dataset.model_dump(), trials[0].evaluation)
    torch.set_num_threads(1)  # a trial gets one CPU (cpus_per_worker < 2 -> one thread)
    t0 = time.perf_counter()
    for trial in trials:
        fit(fit_config(trial), data)
    return time.perf_counter() - t0


def run_search(spec: Any, storage: Path, *, in_process: bool | None = None) -> dict[str, Any]:
    """``run_job`` with event timestamps; the wall and the per-trial start overheads."""
    from jobs.tune import run_job

    events: list[dict[str, Any]] = []
    t0 = time.time()
    result = run_job(
        spec, storage_path=storage, on_event=lambda e: events.append(dict(e, at=time.time())), in_process=in_process
    )
    wall = time.time() - t0
    assert all(t["status"] == "succeeded" for t in result["trials"]), [t["error"] for t in result["trials"]]
    started = {e["trial_id"]: e["at"] for e in events if e["type"] == "trial_started"}
    first = {}
    for e in events:
        if e["type"] == "epoch" and e["trial_id"] not in first:
            first[e["trial_id"]] = e["at"] - started[e["trial_id"]] - e["metrics"]["epoch_time_s"]
    first_epoch = min(e["at"] for e in events if e["type"] == "epoch") - t0
    return {"wall": wall, "starts": list(first.values()), "first_epoch": first_epoch, "trials": len(started)}


def row(name: str, trials: int, job: dict[str, Any], plain: float) -> str:
    ratio = job["wall"] / plain
    per_trial = (job["wall"] - plain) / trials
    return (
        f"| {name} | {trials} | {job['wall']:.1f} | {plain:.1f} | {ratio:.2f} | {per_trial:.2f} | "
        f"{statistics.mean(job['starts']):.2f} / {p90(job['starts']):.2f} | {job['first_epoch']:.1f} |"
    )


def submit_to_first_epoch(n: int, tmp: Path) -> list[float]:
    """A real service on this process's Ray; ``n`` digits jobs, each timed from POST to its first epoch event."""
    import httpx
    import ray
    from ray._private.worker import get_dashboard_url

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    dashboard = get_dashboard_url()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "LONGTAIL_STATE_DIR": str(tmp / "service"),
        "LONGTAIL_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "LONGTAIL_RAY_DASHBOARD_URL": dashboard if dashboard.startswith("http") else f"http://{dashboard}",
        "LONGTAIL_RECONCILE_INTERVAL_S": "1",
    }
    log = (tmp / "service.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    spec = {
        "name": "first-epoch",
        "dataset": {"name": "digits_lt", "imbalance_factor": 50, "test_per_class": 50},
        "model": {"name": "mlp", "hidden_sizes": [128]},
        "losses": [{"name": "balanced_softmax"}],
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.1},
        "scaling": {"cpus_per_worker": 1},
        "tune": {"control": False},
    }
    times = []
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            _wait(lambda: client.get("/healthz").status_code == 200, 60, "the service")
            for i in range(n + 1):  # the first job warms the service (imports, Ray Jobs client)
                t0 = time.time()
                job = client.post("/jobs", json=spec | {"name": f"first-epoch-{i}"}).json()
                job_id = job["id"]

                def first_epoch(job_id: str = job_id) -> bool:
                    return client.get(f"/jobs/{job_id}").json()["progress"]["epochs_reported"] > 0

                _wait(first_epoch, 300, f"job {job_id}'s first epoch", every=0.05)
                if i:
                    times.append(time.time() - t0)
                _wait(
                    lambda job_id=job_id: client.get(f"/jobs/{job_id}").json()["status"] == "succeeded",
                    300,
                    f"job {job_id} to finish",
                )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    return times


BREAKDOWN = r"""
import json, sys, tempfile, time
t = [("python start", time.perf_counter())]
import torch
t.append(("import torch", time.perf_counter()))
import jobs.train as jt
from jobs.plan import plan_trials
from jobs.spec import JobSpec
t.append(("import jobs.train, jobs.plan", time.perf_counter()))
spec = JobSpec.model_validate(json.loads(sys.argv[1]))
trial = plan_trials(spec)[0]
data = jt.cached_dataset(spec.dataset.model_dump())
t.append(("load the dataset", time.perf_counter()))
from lt_core.engine import build_optimizer, save_checkpoint
from lt_core.models import create_model
model = create_model(trial.model, data.num_classes, data.input_shape, **trial.model_params)
build_optimizer(model, jt.fit_config(trial))
t.append(("model + first optimizer (imports torch._dynamo)", time.perf_counter()))
reports = []
jt.run_trial(trial, spec.dataset.model_dump(), jt.TrialContext(report=lambda m, c: reports.append(time.perf_counter())))
t.append(("first trial, all epochs, checkpoint every epoch", time.perf_counter()))
with tempfile.TemporaryDirectory() as tmp:
    a = time.perf_counter()
    save_checkpoint(f"{tmp}/c.pt", model, build_optimizer(model, jt.fit_config(trial)), 1, [])
    save = time.perf_counter() - a
print(json.dumps({"phases": [(n, b - a) for (_, a), (n, b) in zip(t, t[1:])], "save_checkpoint": save,
                  "epochs": len(reports)}))
"""


def breakdown(spec: dict[str, Any]) -> dict[str, Any]:
    """The phases of a first in-process trial in a fresh interpreter (what a new trial process pays once)."""
    import json

    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", BREAKDOWN, json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        },
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["total"] = time.perf_counter() - t0
    return out


def demo_wall() -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGTAIL_") and k != "RAY_ADDRESS"}
    longtail = shutil.which("longtail", path=str(Path(sys.executable).parent))
    cmd = [longtail] if longtail else [sys.executable, "-m", "service.cli"]
    t0 = time.time()
    done = subprocess.run(cmd + ["demo"], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.time() - t0
    if done.returncode != 0:
        raise SystemExit(f"the demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(fn, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if fn():
                return
        except Exception:  # noqa: BLE001 - a service starting up answers with errors
            pass
        time.sleep(every)
    raise TimeoutError(f"waited {timeout} s for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--legacy-trials", type=int, default=0, help="also time N trials as one-worker TorchTrainers")
    parser.add_argument("--ddp-trials", type=int, default=3)
    parser.add_argument("--submits", type=int, default=3)
    parser.add_argument("--demo", action="store_true", help="also time `longtail demo` (its own service and Ray)")
    args = parser.parse_args()

    import ray

    from jobs.plan import plan_trials
    from jobs.spec import JobSpec

    tmp = Path(tempfile.mkdtemp(prefix="bench-trials-"))
    ray.init(
        num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False, configure_logging=False
    )
    rows = []
    try:
        spec = JobSpec.model_validate(twelve_trial_spec())
        trials = plan_trials(spec)
        plain = plain_wall(spec, trials)
        job = run_search(spec, tmp / "job")
        rows.append(row("12-trial digits job, 1 worker (in-process trials)", len(trials), job, plain))
        if args.legacy_trials:
            data = twelve_trial_spec()
            data["losses"] = data["losses"][: args.legacy_trials - 1]
            legacy = JobSpec.model_validate(data)
            legacy_trials = plan_trials(legacy)
            old = run_search(legacy, tmp / "legacy", in_process=False)
            rows.append(
                row(
                    "the same, first trials as 1-worker TorchTrainers (before)",
                    len(legacy_trials),
                    old,
                    plain_wall(legacy, legacy_trials),
                )
            )
        if args.ddp_trials:
            data = twelve_trial_spec()
            data["losses"] = data["losses"][: args.ddp_trials - 1]
            data["train"]["epochs"] = 4
            data["scaling"] = {"num_workers": 2, "cpus_per_worker": 0.99}
            ddp = JobSpec.model_validate(data)
            ddp_trials = plan_trials(ddp)
            ddp_job = run_search(ddp, tmp / "ddp")
            rows.append(
                row(
                    "2-worker DDP trials (TorchTrainer), 4 epochs",
                    len(ddp_trials),
                    ddp_job,
                    plain_wall(ddp, ddp_trials),
                )
            )
        submits = submit_to_first_epoch(args.submits, tmp) if args.submits else []
    finally:
        ray.shutdown()
    demo = demo_wall() if args.demo else None
    parts = breakdown(twelve_trial_spec())

    print(
        "\n| run | trials | job wall s | plain back-to-back s | ratio | overhead / trial s "
        "| trial start overhead mean / p90 s | run_job -> first epoch s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)
    print(f"\nA new trial process, phase by phase (fresh interpreter, {parts['total']:.2f} s in all):")
    for name, seconds in parts["phases"]:
        print(f"  {name:<50} {seconds:6.2f} s")
    print(f"  (one save_checkpoint of this model: {1000 * parts['save_checkpoint']:.1f} ms)")
    if submits:
        print(
            f"\nsubmit -> first epoch event (warm service, digits, {len(submits)} jobs): "
            f"mean {statistics.mean(submits):.2f} s, max {max(submits):.2f} s"
        )
    if demo is not None:
        print(f"`longtail demo` wall: {demo:.1f} s")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
