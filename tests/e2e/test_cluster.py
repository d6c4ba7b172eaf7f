"""A real cluster: ``ray start --head`` in its own temp dir, ``longtail serve --ray-address`` as a separate process,
a tiny two-loss digits job submitted and followed through the Python client.

Isolation from any other Ray on the machine (the session's ``ray_session`` fixture, a developer's own cluster):
every port is a free one, and ``--temp-dir`` is private, so ``ray.init()`` elsewhere never finds this cluster's
address file and attaches to it. The cluster is always stopped, and only this cluster: ``ray start --block`` runs
in its own process group, which is killed at the end, and then every process
whose command line names its private temp dir is killed. (``ray stop --force`` would kill every Ray on the machine,
other test sessions' included.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.cli import stop_process_tree, submit_when_accepted
from service.client import Client, ServiceUnavailable
from service.ray_head import kill_pids, pids_with_arg

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 240.0


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def cluster_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
    return env


def wait_for(predicate, timeout: float, what: str, alive: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    last = None
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"{what}: the process exited with {alive.returncode}\n{tail}")
        try:
            last = predicate()
        except Exception as exc:  # not up yet
            last = exc
        if last is True or (last and not isinstance(last, Exception)):
            return last
        pause.wait(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}\n{tail}")


@dataclass
class Cluster:
    address: str
    dashboard_url: str
    temp_dir: str


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[Cluster]:
    ray = shutil.which("ray", path=str(BIN)) or "ray"
    temp_dir = tempfile.mkdtemp(prefix="ltray-", dir="/tmp")  # short: Ray's unix socket paths have a length limit
    gcs, dash, client, agent, agent_grpc, runtime_env, metrics, node_mgr, obj_mgr = free_ports(9)
    log = tmp_path / "ray-start.log"
    cmd = [
        ray,
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        f"--port={gcs}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--node-manager-port={node_mgr}",
        f"--object-manager-port={obj_mgr}",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=cluster_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    dashboard_url = f"http://127.0.0.1:{dash}"
    try:
        # The Jobs API answers once the dashboard and its job agent are up.
        wait_for(
            lambda: httpx.get(f"{dashboard_url}/api/jobs/", timeout=5).status_code == 200,
            START_TIMEOUT_S,
            "the Ray dashboard",
            proc,
            log,
        )
        yield Cluster(address=f"127.0.0.1:{gcs}", dashboard_url=dashboard_url, temp_dir=temp_dir)
    finally:
        # A test cluster needs no draining (Ray waits up to 30 s on SIGTERM): kill its process group, then any of
        # its processes that left the group (they all name the private temp dir), then check none is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        kill_pids(pids_with_arg(temp_dir))
        wait_for(lambda: not pids_with_arg(temp_dir), 20, "the cluster's processes to exit")
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def service_on_cluster(ray_cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    (port,) = free_ports(1)
    longtail = shutil.which("longtail", path=str(BIN))
    head = [longtail] if longtail else [sys.executable, "-m", "service.cli"]
    cmd = head + [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ray-address",
        ray_cluster.address,
        "--ray-dashboard-url",
        ray_cluster.dashboard_url,
        "--state-dir",
        str(tmp_path / "state"),
        "--log-level",
        "warning",
    ]
    log = tmp_path / "service.log"
    env = cluster_env()
    for key in [k for k in env if k.startswith("LONGTAIL_")]:
        env.pop(key)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with Client(url, retries=0) as probe:

            def ready() -> bool:
                try:
                    return probe.ready()["status"] == "ready"
                except ServiceUnavailable:
                    return False

            wait_for(ready, START_TIMEOUT_S, "the service to be ready", proc, log)
        yield url
    finally:
        stop_process_tree(proc, grace_s=20)
        if proc.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            print(log.read_text(errors="replace")[-3000:])  # noqa: T201 - shown on failure


TINY_JOB = {
    "name": "cluster-e2e",
    "dataset": {"name": "digits_lt", "imbalance_factor": 20},
    "model": {"name": "mlp", "hidden_sizes": [32]},
    "losses": [{"name": "focal", "gamma": 2.0}, {"name": "balanced_softmax"}],
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.1},
    "scaling": {"num_workers": 1, "cpus_per_worker": 0.99},
    "tune": {"max_concurrent_trials": 2, "control": False},
}


def test_service_on_a_ray_start_cluster(service_on_cluster: str) -> None:
    with Client(service_on_cluster, retries=3) as client:
        assert client.ready() == {"status": "ready", "store": "ok", "ray": "ok"}
        job = submit_when_accepted(client, TINY_JOB)  # resubmits if Ray's Jobs agent refused it (not ready yet)
        assert job.progress.trials_total == 2
        seen: list[str] = []
        final = client.wait(job.id, timeout=JOB_TIMEOUT_S, on_progress=lambda j: seen.append(str(j.status)))
        logs = "" if final.status == "succeeded" else client.logs(job.id)
        assert final.status == "succeeded", f"{final.error}\n{logs}"
        assert "running" in seen and seen[-1] == "succeeded"
        assert final.progress.trials_done == 2 and final.progress.epochs_reported == 4

        results = client.results(job.id)
        assert results.complete and results.dataset["name"] == "digits_lt"
        assert sorted(b["branch"] for b in results.branches) == ["balanced_softmax", "focal"]
        for trial in results.trials:
            assert trial["status"] == "succeeded" and len(trial["history"]) == 2
            assert 0.0 <= trial["best"]["metrics"]["balanced_accuracy"] <= 1.0
        assert results.best_trial is not None and results.control_trial_id is None
