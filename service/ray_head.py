"""The embedded mode's Ray head: a ``ray start --head --block`` process of its own, outliving the service.

It runs in a new session (``start_new_session``), so killing or restarting the service's process group leaves it
running, and with it every job. Where it is lives in ``<state_dir>/ray_head.json``: on start the service
reattaches to the head recorded there if it is alive (the recorded ``ray start`` process still runs, with the
recorded private temp dir on its command line, since this boot, and its dashboard sees its GCS), and starts a new one
otherwise. Every port is a free one and ``--temp-dir`` is private, so it never collides with another Ray on the
machine, and ``stop_head`` stops this head only: its process group, then every process naming its temp dir (never a
machine-wide ``ray stop``). Linux only (the boot id in ``/proc``). No Ray import: the ``ray`` CLI runs in a subprocess.

Token auth: the head and every client of it (the Jobs client in the service, the drivers) must agree on
``RAY_AUTH_MODE``; the service sets it in its own environment (default ``token``, Ray's own) before starting one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

logger = logging.getLogger("service.ray_head")

RECORD = "ray_head.json"
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class HeadRecord:
    pid: int  # the ``ray start --block`` process: its session leader and process group
    address: str  # GCS address (host:port)
    dashboard_url: str  # Jobs API and State API
    temp_dir: str  # private; every process of this head names it on its command line
    boot_id: str
    started_at: float
    log: str

    def alive(self, timeout: float = 3.0) -> bool:
        """The recorded process still runs (this boot, with our temp dir) and the Jobs API answers."""
        if self.boot_id != boot_id() or self.pid not in pids_with_arg(self.temp_dir):
            return False
        return gcs_healthy(self.dashboard_url, timeout)


def gcs_healthy(dashboard_url: str, timeout: float = 3.0) -> bool:
    """The dashboard answers and sees its GCS (a public endpoint: no token needed under token auth)."""
    try:
        return httpx.get(f"{dashboard_url}/api/gcs_healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pids_with_arg(marker: str) -> list[int]:
    """Processes with ``marker`` in their command line (e.g. a private Ray temp dir)."""
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []  # None where access is denied or the process is gone
        if proc.info["pid"] != os.getpid() and any(marker in arg for arg in cmdline):
            out.append(int(proc.info["pid"]))
    return out


def kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            psutil.Process(pid).kill()


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


def read_record(state_dir: Path) -> HeadRecord | None:
    try:
        return HeadRecord(**json.loads((Path(state_dir) / RECORD).read_text()))
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One service of a state directory starts or stops its head at a time."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(state_dir) / "ray_head.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_head(
    state_dir: Path, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> tuple[HeadRecord, bool]:
    """The recorded head if alive, else a new one (the dead one's leftovers stopped); (record, started)."""
    with _locked(state_dir):
        record = read_record(state_dir)
        if record is not None:
            if record.alive():
                logger.info("reattached to the Ray head at %s (pid %d)", record.address, record.pid)
                return record, False
            logger.warning("the recorded Ray head (pid %d) is gone; starting a new one", record.pid)
            _stop(record)
        record = _start(Path(state_dir), num_cpus=num_cpus, num_gpus=num_gpus)
        return record, True


def _start(state_dir: Path, *, num_cpus: int | None, num_gpus: int | None) -> HeadRecord:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray") or "ray"
    temp_dir = tempfile.mkdtemp(prefix="ltray-", dir="/tmp")  # short: Ray's unix socket paths have a length limit
    gcs, dash, client, agent, agent_grpc, runtime_env, metrics, node_mgr, obj_mgr = free_ports(9)
    cmd = [
        ray,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",  # one local node: its address is loopback
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
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    log = state_dir / "ray_head.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outside the service's process group and session: it survives the service
            cwd=str(state_dir),
        )
    record = HeadRecord(
        pid=proc.pid,
        address=f"127.0.0.1:{gcs}",
        dashboard_url=f"http://127.0.0.1:{dash}",
        temp_dir=temp_dir,
        boot_id=boot_id(),
        started_at=time.time(),
        log=str(log),
    )
    # Recorded before it is up: a service killed while it starts still finds (and stops) it next time.
    _write_record(state_dir, record)
    deadline = time.monotonic() + START_TIMEOUT_S
    pause = threading.Event()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _stop(record)
            _remove_record(state_dir)
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"`ray start --head` exited with {proc.returncode}; {log} ends with:\n{tail}")
        if gcs_healthy(record.dashboard_url):
            # Its job agent may lag a few seconds behind: submissions are retried (core.MAX_SUBMIT_ATTEMPTS).
            logger.info("started a Ray head at %s (pid %d, dashboard %s)", record.address, proc.pid, dash)
            return record
        pause.wait(0.5)
    _stop(record)
    _remove_record(state_dir)
    raise RuntimeError(f"the Ray head did not answer within {START_TIMEOUT_S:.0f} s; see {log}")


def _write_record(state_dir: Path, record: HeadRecord) -> None:
    path = state_dir / RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=1))
    os.replace(tmp, path)


def _remove_record(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / RECORD).unlink()


def _stop(record: HeadRecord, grace_s: float = 5.0) -> None:
    """SIGTERM the head's process group, then SIGKILL whatever of it is left; wait until none is."""
    if record.boot_id == boot_id() and record.pid in pids_with_arg(record.temp_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        pause = threading.Event()
        while time.monotonic() < deadline and record.pid in pids_with_arg(record.temp_dir):
            pause.wait(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    pause = threading.Event()
    while (left := pids_with_arg(record.temp_dir)) and time.monotonic() < deadline:
        kill_pids(left)  # processes of this head that left its group (workers, the job agent's drivers)
        pause.wait(0.2)
    if left:
        logger.warning("processes of the Ray head in %s did not exit: %s", record.temp_dir, left)
    shutil.rmtree(record.temp_dir, ignore_errors=True)


def stop_head(state_dir: Path) -> bool:
    """Stop the head recorded in ``state_dir`` (only it) and forget it; False when none was recorded."""
    with _locked(state_dir):
        record = read_record(state_dir)
        if record is None:
            return False
        _stop(record)
        _remove_record(state_dir)
        return True
