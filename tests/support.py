"""Helpers shared by the test modules (importable as ``support``: pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """The ASGI ``app`` served by a real uvicorn in a thread on a loopback port held from the start; yields its
    base URL and stops the server on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound before uvicorn starts: no other process can take the port in between
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none", access_log=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: srv.started or not thread.is_alive(), 15, "the uvicorn server to start")
        assert srv.started, "the uvicorn server thread died while starting"
        host, port = sock.getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()
