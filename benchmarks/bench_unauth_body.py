"""Service memory after unauthenticated large bodies: RSS of a real uvicorn server process, idle and after each.

    python benchmarks/bench_unauth_body.py [--mib 60] [--root CHECKOUT]

The server (``--serve``: the app with tokens configured and a FakeDispatcher, served by ``service.server`` as
``longtail serve`` does) runs in its own process. For each target, the client sends the headers and then streams
``--mib`` MiB of JSON-looking bytes without a token or with a wrong driver secret, until the server answers and
closes; then it reads the server's RSS (``/proc/<pid>/status``: VmRSS now, VmHWM the peak) and times ``/healthz``.
Goal: RSS within 50 MB of idle after every target. ``--root`` serves another checkout of the project (e.g. an
older commit, ``git archive <rev> | tar -x -C /tmp/old``) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

TOKEN = "bench-token-00001"
# The server process imports the served checkout (PYTHONPATH), not this file's.
SERVE = f"import sys, runpy; sys.argv[0] = {str(Path(__file__).resolve())!r}; " + (
    "ns = runpy.run_path(sys.argv[0], run_name='bench'); ns['serve'](int(sys.argv[1]), sys.argv[2])"
)


def serve(port: int, state_dir: str) -> None:
    from service.app import create_app
    from service.settings import Settings
    from service.testing import FakeDispatcher

    settings = Settings(state_dir=Path(state_dir), port=port, api_tokens={TOKEN: "bench"}, reconcile_interval_s=3600)
    app = create_app(settings, dispatcher=FakeDispatcher())
    try:
        from service.server import serve as run
    except ImportError:  # an older checkout (--root): plain uvicorn, as it served then
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        return
    run(app, settings, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def send_body(port: int, path: str, headers: dict[str, str], size: int) -> tuple[str, int, float]:
    """Stream ``size`` bytes as the body; returns (status line, bytes the server let us send, seconds)."""
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    chunk = (b'{"seq": 1, "type": "epoch", "trial_id": "t", "epoch": 1},' * 1200)[: 64 * 1024]
    sent = 0
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        answer = b""
        while sent < size:
            try:
                answer += sock.recv(65536)
                if answer:
                    break  # the server answered before the body was complete
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            try:
                sent += sock.send(chunk[: size - sent])
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        sock.settimeout(10)
        try:
            while b"\r\n" not in answer:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except (TimeoutError, ConnectionResetError):
            pass
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), sent, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=60)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve (default: this one)")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "STATE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return
    size = args.mib << 20
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "PYTHONPATH": str(args.root.resolve())}
        cmd = [sys.executable, "-c", SERVE, str(port), state]
        proc = subprocess.Popen(cmd, env=env, cwd=str(args.root.resolve()))
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/healthz", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.1)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for _ in range(20):  # warm up the code paths a real idle service has run
                httpx.get(f"{url}/jobs", headers=auth)
                httpx.post(f"{url}/jobs", headers=auth, content=b"{}")
            idle, _ = rss_mb(proc.pid)
            targets = [
                ("POST /internal/jobs/job_x/events, no secret", "/internal/jobs/job_x/events", {}),
                (
                    "POST /internal/jobs/job_x/events, wrong secret",
                    "/internal/jobs/job_x/events",
                    {"X-Longtail-Driver-Secret": "wrong"},
                ),
                ("POST /jobs, no token", "/jobs", {}),
                ("POST /jobs, wrong token", "/jobs", {"Authorization": "Bearer wrong-token"}),
            ]
            rows = []
            for name, path, headers in targets:
                status, sent, seconds = send_body(port, path, headers, size)
                now, peak = rss_mb(proc.pid)
                t0 = time.perf_counter()
                httpx.get(f"{url}/healthz", timeout=10)
                health_ms = (time.perf_counter() - t0) * 1000
                rows.append((name, status, sent, seconds, now, now - idle, peak, health_ms))
            print(f"service RSS idle: {idle:.1f} MB; body: {args.mib} MiB announced and streamed per request\n")
            print("| request | answer | bytes sent before it | s | RSS after (MB) | vs idle | peak RSS | /healthz ms |")
            print("|---|---|---|---|---|---|---|---|")
            for name, status, sent, secs, now, delta, peak, health in rows:
                cells = [name, status, f"{sent:,}", f"{secs:.3f}", f"{now:.1f}", f"{delta:+.1f}", f"{peak:.1f}"]
                print("| " + " | ".join([*cells, f"{health:.1f}"]) + " |")
            worst = max(r[5] for r in rows)
            print(f"\nworst RSS growth over idle: {worst:+.1f} MB (goal: <= 50 MB)")
            print(json.dumps({"idle_mb": round(idle, 1), "worst_growth_mb": round(worst, 1)}))
        finally:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
