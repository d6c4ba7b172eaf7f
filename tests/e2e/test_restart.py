"""Nothing lost, embedded mode: a real ``python -m service`` subprocess with its own Ray head (``service.ray_head``).

The service runs in its own process group, as under a terminal or systemd. One small digits job meets two crashes:
first the service's whole group is SIGKILLed mid-job and the service started again on the same state directory; it
reattaches to the Ray head it recorded there (outside that group) and the job goes on. Then the service and the
Ray head are SIGKILLed together (a reboot): the restarted service starts a new head and dispatches the job again,
and its driver resumes the Tune experiment; trials finished before the crash do not run again. The job succeeds
with every epoch of every trial, each stored once. The head is always stopped at the end, by its record (never a
machine-wide ``ray stop``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port, tiny_spec, wait_for

from jobs.driver import read_spool
from service.ray_head import kill_pids, pids_with_arg, read_record, stop_head
from service.store import JobStore

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def poll(fn: Callable[[], Any], *, timeout: float, what: str) -> Any:
    return wait_for(fn, timeout, what, every=0.5, tolerate=(httpx.HTTPError, OSError))


class Service:
    """``python -m service`` (embedded Ray) in a new session and process group; ``crash()`` kills the group."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = state_dir / "service.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LONGTAIL_") and k != "RAY_ADDRESS"}
        self.env.update(
            {
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
                "LONGTAIL_STATE_DIR": str(state_dir),
                "LONGTAIL_RAY_NUM_CPUS": "2",
                "LONGTAIL_RECONCILE_INTERVAL_S": "1",
                "RAY_AUTH_MODE": "disabled",  # a loopback test head
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        poll(self._ready, timeout=150, what=f"the service to be ready (log {self.log})")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the service exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        return httpx.get(f"{self.url}/readyz", timeout=5).json().get("status") == "ready"

    def crash(self) -> None:
        """SIGKILL the service's whole process group: what a crash, an OOM kill or a killed terminal does."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    state.mkdir()
    yield state
    # Always: the service's group, then the Ray head it recorded (only that one), and nothing of it left.
    record = read_record(state)
    stop_head(state)
    if record is not None:
        assert not pids_with_arg(record.temp_dir), "processes of the test's Ray head are still running"


def assert_complete_once(state_dir: Path, job_id: str, results: dict[str, Any], epochs: int) -> list[dict]:
    """Every trial succeeded with every epoch; every driver event is stored once. Returns the stored events."""
    assert len(results["trials"]) == 3
    for trial in results["trials"]:
        assert trial["status"] == "succeeded", trial
        assert [h["epoch"] for h in trial["history"]] == list(range(1, epochs + 1)), trial
    store = JobStore(f"sqlite:///{state_dir / 'longtail.db'}")
    try:
        events = [json.loads(payload) for _, _, payload in store.events_after(job_id, 0, limit=10_000)]
    finally:
        store.close()
    driver = [e for e in events if e.get("seq") is not None]
    assert len({e["seq"] for e in driver}) == len(driver)
    epoch_keys = Counter((e["trial_id"], e["epoch"]) for e in driver if e["type"] == "epoch")
    assert len(epoch_keys) == 3 * epochs and set(epoch_keys.values()) == {1}
    assert Counter(e["type"] for e in driver)["trial_started"] == 3
    return events


# Trials of a few seconds each, one at a time: the test must find a trial finished and another running.
SLOW_SPEC = tiny_spec(
    name="crash",
    dataset={"name": "synthetic_lt", "num_classes": 10, "dim": 64, "n_max": 3000, "imbalance_factor": 10},
    model={"name": "mlp", "hidden_sizes": [256, 256]},
    tune={"max_concurrent_trials": 1},
)


def newest_file(folder: Path) -> float:
    return max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=0.0)


def test_service_crash_then_crash_with_its_ray_head_loses_nothing(state_dir: Path) -> None:
    """Two crashes of one job: the service alone (it reattaches), then the service and the Ray head (it resumes)."""
    epochs = 6
    service = Service(state_dir)
    first_head = None
    try:
        service.start()
        first_head = read_record(state_dir)
        assert first_head is not None and first_head.alive()
        spool = experiment = None
        with httpx.Client(base_url=service.url, timeout=30) as c:
            job_id = c.post("/jobs", json=SLOW_SPEC | {"train": {"epochs": epochs, "batch_size": 32}}).json()["id"]
            spool = state_dir / "ray_results" / job_id / "events.jsonl"
            experiment = state_dir / "ray_results" / f"tune-{job_id}"

            def mid_job() -> Any:
                job = c.get(f"/jobs/{job_id}").json()
                assert job["status"] in ("queued", "running"), job
                return job["progress"]["epochs_reported"] >= 1 and job

            poll(mid_job, timeout=180, what="the first epoch")

        # 1. The service's whole process group dies; its Ray head (another session) and the job go on.
        service.crash()
        assert first_head.alive(), "the Ray head died with the service"
        service.start()
        assert read_record(state_dir) == first_head  # reattached, not a new head
        with httpx.Client(base_url=service.url, timeout=30) as c:

            def a_finish_saved_by_tune() -> Any:
                job = c.get(f"/jobs/{job_id}").json()
                assert job["status"] == "running" and job["resumes"] == 0 and job["progress"]["trials_done"] < 3, job
                finished = [e["time"] for e in read_spool(spool) if e["type"] == "trial_finished"]
                saved = [p.stat().st_mtime for p in experiment.glob("experiment_state*.json")]
                # Tune saves its experiment state every 2 s (the driver's TUNE_GLOBAL_CHECKPOINT_S): crash once the
                # state it saved is younger than the last finished trial, so Tune knows every finish on record.
                return finished and saved and max(saved) > max(finished) + 0.5

            poll(a_finish_saved_by_tune, timeout=240, what="a finished trial in Tune's saved experiment state")

        # 2. The machine "reboots": the service's group and the whole Ray head die at once.
        crashed_at = time.time()
        service.crash()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first_head.pid, signal.SIGKILL)
        kill_pids(pids_with_arg(first_head.temp_dir))
        wait_for(lambda: not pids_with_arg(first_head.temp_dir), 30, "the first Ray head to be gone")
        finished = {e["trial_id"] for e in read_spool(spool) if e["type"] == "trial_finished"}
        assert 1 <= len(finished) < 3

        service.start()
        head = read_record(state_dir)
        assert head is not None and head.pid != first_head.pid  # a new head
        with httpx.Client(base_url=service.url, timeout=30) as c:
            done = poll(
                lambda: (j := c.get(f"/jobs/{job_id}").json())["status"] not in ("queued", "running") and j,
                timeout=300,
                what=f"job {job_id} to finish after resuming",
            )
            assert done["status"] == "succeeded", done
            assert done["resumes"] == 1 and "no longer knows this job" in done["resume_history"][0]["reason"]
            results = c.get(f"/jobs/{job_id}/results").json()
        # Trials finished before the crash did not run again: nothing in their folders is newer than the crash,
        # while the resumed ones wrote their checkpoints after it. (One trial process runs several trials, so its
        # actors do not count trials.)
        for trial in results["trials"]:
            newest = newest_file(experiment / f"trial_{trial['trial_id']}")
            if trial["trial_id"] in finished:
                assert newest < crashed_at, (trial["trial_id"], newest, crashed_at)
            else:
                assert newest > crashed_at, (trial["trial_id"], newest, crashed_at)
    finally:
        service.crash()
        if first_head is not None:  # its dying drivers may still write logs there
            kill_pids(pids_with_arg(first_head.temp_dir))
            shutil.rmtree(first_head.temp_dir, ignore_errors=True)
    events = assert_complete_once(state_dir, job_id, results, epochs)
    assert [e["type"] for e in events].count("resumed") == 1
