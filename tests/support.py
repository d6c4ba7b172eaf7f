"""Helpers shared by the test modules (importable as ``support``: pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    every: float = 0.02,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call ``predicate`` until it returns something truthy; fail with the last value (or error) after ``timeout``.

    Exceptions of the ``tolerate`` types count as "not yet" (e.g. a server that is still starting).
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except tolerate as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if last:
                return last
        pause.wait(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A small valid job spec (two losses on digits_lt, 2 epochs) as JSON."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "dataset": {"name": "digits_lt"},
        "model": {"name": "mlp", "hidden_sizes": [32]},
        "losses": [{"name": "focal", "gamma": 2.0}, {"name": "ldam"}],
        "train": {"epochs": 2},
        "scaling": {"cpus_per_worker": 0.99},
    }
    spec.update(overrides)
    return spec
