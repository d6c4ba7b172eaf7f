"""End to end: a real ``python -m service`` (uvicorn) subprocess on the session's local Ray, through the Jobs API.

One job on ``digits_lt`` (two losses + the control, 8 epochs of a wide MLP, one trial at a time) runs while
the service is killed and restarted on the same store; then a second job is cancelled while it runs and Ray must
give its CPUs back. Waits are polls with deadlines that fail with the last state seen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.ray]


def poll(fn: Callable[[], Any], *, timeout: float, what: str, every: float = 0.5) -> Any:
    """``wait_for`` that treats HTTP and OS errors (a service restarting) as "not yet"."""
    return wait_for(fn, timeout, what, every=every, tolerate=(httpx.HTTPError, OSError))


ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class ServiceProcess:
    """``python -m service`` in a subprocess; restartable on the same port and state directory."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        poll(self._healthy, timeout=60, what=f"the service on {self.url} (log {self.log})")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the service exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # a crash, not a clean shutdown
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTH, timeout=30)


@pytest.fixture(scope="module")
def service(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    from ray._private.worker import get_dashboard_url

    ray = ray_session
    state = tmp_path_factory.mktemp("service-e2e")
    # The session Ray started in this process knows its dashboard; a cluster joined by address is named in the env.
    dashboard = os.environ.get("LONGTAIL_E2E_RAY_DASHBOARD_URL") or get_dashboard_url()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "LONGTAIL_STATE_DIR": str(state),
        "LONGTAIL_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "LONGTAIL_RAY_DASHBOARD_URL": dashboard if dashboard.startswith("http") else f"http://{dashboard}",
        "LONGTAIL_API_TOKENS": f"{TOKEN}:e2e",
        "LONGTAIL_RECONCILE_INTERVAL_S": "1",
        "LONGTAIL_MAX_RUNNING_JOBS": "1",
        # ray.init() of the session enables token auth unless told otherwise; the Jobs client must match it.
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
    }
    proc = ServiceProcess(env, free_port(), state / "service.log")
    proc.start()
    yield proc
    proc.stop()


def job_spec(name: str, epochs: int) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"name": "digits_lt"},
        "model": {"name": "mlp", "hidden_sizes": [32]},
        "losses": [{"name": "focal", "gamma": 2.0}, {"name": "logit_adjusted"}],
        "train": {"epochs": epochs, "batch_size": 64, "lr": 0.05},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.99},
        "tune": {"num_samples": 1, "max_concurrent_trials": 2},
    }


RESTART_EPOCHS = 8


def restart_spec() -> dict[str, Any]:
    """Trials of a few seconds (a wide MLP, small batches), one at a time: the job is still running when the test
    has seen its first epoch and kills the service."""
    spec = job_spec("e2e-restart", epochs=RESTART_EPOCHS)
    spec["model"] = {"name": "mlp", "hidden_sizes": [2048, 2048]}
    spec["train"]["batch_size"] = 8
    spec["tune"]["max_concurrent_trials"] = 1
    return spec


def test_job_runs_to_results_across_a_service_restart(service: ServiceProcess) -> None:
    with service.client() as c:
        assert c.get("/readyz").json()["status"] == "ready"
        r = c.post("/jobs", json=restart_spec(), headers={"Idempotency-Key": "e2e-1"})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        # Refused before it is accepted: a worker larger than any node.
        too_big = c.post("/jobs", json={**job_spec("big", 2), "scaling": {"cpus_per_worker": 64}})
        assert too_big.status_code == 422 and too_big.json()["error"]["details"][0]["loc"] == "scaling.cpus_per_worker"

        def running_with_progress() -> Any:
            job = c.get(f"/jobs/{job_id}").json()
            assert job["status"] in ("queued", "running"), (job["status"], job["error"])
            return job if job["progress"]["epochs_reported"] >= 1 else None

        before = poll(running_with_progress, timeout=120, what="the first epoch report")
    seen_events = before["progress"]["epochs_reported"]

    service.kill()  # mid-job: the driver keeps training and spools what it cannot deliver
    spool = Path(service.env["LONGTAIL_STATE_DIR"]) / "ray_results" / job_id / "events.jsonl"
    poll(
        lambda: spool.exists() and len(spool.read_text().splitlines()) > seen_events + 1,
        timeout=90,
        what="events spooled while the service was down",
    )
    service.start()

    with service.client() as c:
        done = poll(
            lambda: (j := c.get(f"/jobs/{job_id}").json())["status"] not in ("queued", "running") and j,
            timeout=150,
            what=f"job {job_id} to finish",
        )
        assert done["status"] == "succeeded", done
        assert done["progress"]["trials_done"] == done["progress"]["trials_total"] == 3
        assert done["progress"]["epochs_reported"] == 3 * RESTART_EPOCHS

        res = c.get(f"/jobs/{job_id}/results").json()
        assert res["complete"] is True and res["status"] == "succeeded"
        assert len(res["trials"]) == 3 and sum(t["is_control"] for t in res["trials"]) == 1
        assert res["control_trial_id"] in {t["trial_id"] for t in res["trials"]}
        for trial in res["trials"]:
            assert trial["status"] == "succeeded" and len(trial["history"]) == RESTART_EPOCHS
            assert len(trial["final"]["per_class_accuracy"]) == 10
            assert {"many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"} <= set(trial["final"])
        assert {b["branch"] for b in res["branches"]} >= {"focal", "logit_adjusted"}
        assert all(b["gain"] is not None for b in res["branches"])
        assert res["dataset"]["name"] == "digits_lt" and res["dataset"]["fingerprint"]
        assert res["best_trial"]["trial_id"] in {t["trial_id"] for t in res["trials"]}

        # Nothing was lost: every epoch event reached the store (delivered late or replayed from the spool).
        stream = c.get(f"/jobs/{job_id}/events", timeout=30).text
        epochs = [
            json.loads(line[6:])
            for line in stream.splitlines()
            if line.startswith("data: ") and '"type":"epoch"' in line
        ]
        assert len({(e["trial_id"], e["epoch"]) for e in epochs}) == 3 * RESTART_EPOCHS
        assert "job_finished" in stream
        # The idempotent retry still answers with the same job.
        again = c.post("/jobs", json=restart_spec(), headers={"Idempotency-Key": "e2e-1"})
        assert again.json()["id"] == job_id
        logs = c.get(f"/jobs/{job_id}/logs").text
        assert logs.strip() and service.env["LONGTAIL_STATE_DIR"] not in logs  # server paths made relative
        assert service.env["LONGTAIL_STATE_DIR"] not in json.dumps(res)
        metrics = c.get("/metrics").text
        assert 'longtail_jobs{status="succeeded"} 1' in metrics
        check_model_out(c, job_id, res, service)


def check_model_out(c: httpx.Client, job_id: str, res: dict[str, Any], service: ServiceProcess) -> None:
    """The finished job's model: downloaded, loaded, it scores the job's test split as the results report."""
    import tempfile

    import torch

    from jobs.plan import evaluation_options
    from jobs.spec import JobSpec
    from jobs.train import trial_data
    from lt_core import load_model
    from lt_core.inference import predict_logits
    from lt_core.metrics import EvalAccumulator

    r = c.get(f"/jobs/{job_id}/model", timeout=60)
    assert r.status_code == 200, r.text
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m.pt").write_bytes(r.content)
        model, manifest = load_model(Path(tmp) / "m.pt")
    assert manifest["trial_id"] == res["best_trial"]["trial_id"] or any(
        t["trial_id"] == manifest["trial_id"] for t in res["trials"]
    )
    trial = next(t for t in res["trials"] if t["trial_id"] == manifest["trial_id"])
    assert manifest["epoch"] == trial["selected"]["epoch"] and manifest["posthoc"]["tau"] == trial["posthoc"]["tau"]
    spec = JobSpec.model_validate(c.get(f"/jobs/{job_id}").json()["spec"])
    data = trial_data(spec.dataset.model_dump(), evaluation_options(spec))
    assert data.fingerprint == manifest["dataset"]["fingerprint"] == res["dataset"]["fingerprint"]
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    for posthoc, reported in (
        ("none", trial["selected"]["test"]["balanced_accuracy"]),
        ("auto", trial["posthoc"]["test"]["balanced_accuracy"]),
    ):
        acc = EvalAccumulator(manifest["num_classes"])
        acc.update(predict_logits(model, manifest, x, posthoc=posthoc), data.test_targets)
        assert abs(acc.compute(manifest["class_counts"])["balanced_accuracy"] - reported) <= 1e-6, posthoc
    assert res["control_posthoc"] is not None and res["control_posthoc"]["method"] == "logit_adjustment"
    # Deleting the finished job removes its Tune experiment and its rows.
    storage = Path(service.env["LONGTAIL_STATE_DIR"]) / "ray_results"
    assert (storage / f"tune-{job_id}").is_dir()
    d = c.delete(f"/jobs/{job_id}")
    assert d.status_code == 200, d.text
    assert not (storage / f"tune-{job_id}").exists() and not (storage / job_id).exists()
    assert c.get(f"/jobs/{job_id}").status_code == 404


def test_cancel_frees_ray_resources(service: ServiceProcess, ray_session) -> None:
    ray = ray_session
    total_cpu = ray.cluster_resources()["CPU"]
    with service.client() as c:
        job_id = c.post("/jobs", json=job_spec("e2e-cancel", epochs=200)).json()["id"]

        def training() -> Any:
            job = c.get(f"/jobs/{job_id}").json()
            assert job["status"] in ("queued", "running"), (job["status"], job["error"])
            return job["progress"]["epochs_reported"] >= 1 and job

        poll(training, timeout=120, what="the job to report an epoch")
        assert ray.available_resources().get("CPU", 0.0) < total_cpu
        secret_file = Path(service.env["LONGTAIL_STATE_DIR"]) / "secrets" / f"{job_id}.secret"
        secret = secret_file.read_text().strip()
        assert len(secret) >= 32 and secret_file.stat().st_mode & 0o077 == 0
        assert_secret_not_exposed(service, ray, job_id, secret)
        r = c.post(f"/jobs/{job_id}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert c.post(f"/jobs/{job_id}/cancel").status_code == 409

    poll(
        lambda: ray.available_resources().get("CPU", 0.0) >= total_cpu - 1e-6,
        timeout=60,
        what=f"Ray to free the cancelled job's CPUs (total {total_cpu})",
    )

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(service.env["LONGTAIL_RAY_DASHBOARD_URL"])
    poll(
        lambda: str(client.get_job_status(f"longtail-{job_id}")).endswith("STOPPED"),
        timeout=30,
        what="the Ray job to be STOPPED",
    )
    with service.client() as c:
        assert c.get(f"/jobs/{job_id}").json()["status"] == "cancelled"  # the reconciler leaves it cancelled
    # The secret expired with the job: its file is gone and /internal refuses it.
    assert not secret_file.exists()
    forged = {"events": [{"seq": 900004, "type": "job_finished", "result": {"forged": True}}]}
    r = httpx.post(
        f"{service.url}/internal/jobs/{job_id}/events", json=forged, headers={"X-Longtail-Driver-Secret": secret}
    )
    assert r.status_code == 403


def assert_secret_not_exposed(service: ServiceProcess, ray: Any, job_id: str, secret: str) -> None:
    """The driver secret is in neither Ray's job info (entrypoint, runtime_env) nor a file other users can read."""
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(service.env["LONGTAIL_RAY_DASHBOARD_URL"]).get_job_info(f"longtail-{job_id}")
    dumped = json.dumps(info.dict() if hasattr(info, "dict") else vars(info), default=str)
    assert job_id in dumped and secret not in dumped
    listed = httpx.get(f"{service.env['LONGTAIL_RAY_DASHBOARD_URL']}/api/jobs/", timeout=30).text
    assert job_id in listed and secret not in listed
    session = Path(ray._private.worker.global_worker.node.get_session_dir_path())
    roots = [Path(service.env["LONGTAIL_STATE_DIR"]), session]
    needle = secret.encode()
    checked = 0
    for root in roots:
        for path in root.rglob("*"):
            try:
                st = path.lstat()
            except OSError:
                continue
            if not path.is_file() or path.is_symlink() or not st.st_mode & 0o044 or st.st_size > 64 << 20:
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            checked += 1
            assert needle not in data, f"{path} (mode {oct(st.st_mode)}) holds the driver secret"
    assert checked > 10  # the walk saw the Ray logs and the service's files
