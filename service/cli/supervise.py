"""The demo's child service: started on loopback in its own process group, stopped with everything it started.

Processes are found and stopped with psutil (the service's Ray starts processes that leave its group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from service.ray_head import stop_head


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


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
    # and anything it started that left the group (the processes we saw, if still the same ones: psutil checks)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            child.kill()
    psutil.wait_procs(family, timeout=10)


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


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
