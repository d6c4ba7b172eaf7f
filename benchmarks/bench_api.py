"""Latency and throughput of the API over a real uvicorn on loopback, against a bare FastAPI endpoint.

    python benchmarks/bench_api.py [--requests 2000] [--concurrency 8]
    python benchmarks/bench_api.py --mixed [--clients 64] [--duration 60]

Measures ``POST /jobs`` (dispatch stubbed at the boundary: a FakeDispatcher) and ``GET /jobs/{id}/results`` of a
stored, finished 50-trial job, and ``GET /bare`` of a one-line FastAPI app served the same way, in the same run.
Each server runs in its own process (``--serve``), the client here with httpx and keep-alive: first sequential
requests (latency p50/p99), then ``--concurrency`` threads (requests/s). Goals: results >= 50% of the bare
endpoint's throughput; POST p50 < 20 ms.

``--mixed``: the same service on SQLite, then on PostgreSQL (a throwaway server, as in the tests: ``tests/pg.py``),
each under ``--clients`` threads for ``--duration`` seconds, each thread looping over POST /jobs, GET results of the
50-trial job and its SSE event stream (a finished job's stream replays and ends). Prints requests/s, p50/p99 per
request kind and the count of 5xx. Goals: zero 5xx; PostgreSQL's p99 within 2x SQLite's.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURE = ROOT / "tests" / "fixtures" / "job_result.json"
SPEC = {
    "name": "bench",
    "dataset": {"name": "digits_lt"},
    "model": {"name": "mlp", "hidden_sizes": [32]},
    "losses": [{"name": "focal", "gamma": {"choice": [1.0, 2.0]}}, {"name": "ldam"}],
    "train": {"epochs": 10},
    "scaling": {"cpus_per_worker": 0.99},
    "tune": {"num_samples": 4},
}


def fifty_trial_result() -> dict:
    """The fixture's JobResult grown to 50 trials (copies of its trials under new ids)."""
    base = json.loads(FIXTURE.read_text())
    trials = []
    for i in range(50):
        t = copy.deepcopy(base["trials"][i % len(base["trials"])])
        t["trial_id"] = f"bench_{i:05d}"
        t["is_control"] = i == 0
        trials.append(t)
    base["trials"] = trials
    base["control_trial_id"] = trials[0]["trial_id"]
    return base


def prepare_store(state: Path, store_url: str | None = None) -> str:
    """A finished 50-trial job in the store; returns its id."""
    from service.settings import Settings
    from service.store import JobStatus, JobStore

    settings = Settings(state_dir=state, api_tokens={}, store_url=store_url)
    store = JobStore(str(settings.store_url))
    job, _ = store.create_job(
        owner="local",
        spec=SPEC,
        run_spec=json.dumps(SPEC),
        name="bench",
        metric="balanced_accuracy",
        mode="max",
        trial_total=50,
    )
    store.transition(job.id, JobStatus.RUNNING, submission_id="bench", secret_hash="x")
    store.ingest(job.id, [{"seq": 1, "type": "job_finished", "result": fifty_trial_result()}])
    store.close()
    return job.id


def serve(kind: str, port: int, state: str, store_url: str | None = None) -> None:
    import uvicorn
    from fastapi import FastAPI

    if kind == "bare":
        app = FastAPI()

        @app.get("/bare")
        def bare() -> dict:
            return {"ok": True}
    else:
        from service.app import create_app
        from service.settings import Settings
        from service.testing import FakeDispatcher

        settings = Settings(
            state_dir=Path(state),
            store_url=store_url,
            api_tokens={},
            max_jobs_per_owner=1_000_000,  # more jobs than a run posts: the quota is not what this measures
            max_trials_per_job=1000,
            reconcile_interval_s=3600,
        )
        app = create_app(settings, dispatcher=FakeDispatcher())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str, state: Path, store_url: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    extra = ["--store-url", store_url] if store_url else []
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--state", str(state), *extra], cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    pause = threading.Event()
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/openapi.json", timeout=1)
            return proc, url
        except httpx.HTTPError:
            pause.wait(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def measure(url: str, request: Callable[[httpx.Client], httpx.Response], n: int, concurrency: int) -> dict:
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(min(50, n)):  # warm-up
            request(client)
        latencies = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = request(client)
            latencies.append(time.perf_counter() - t0)
            assert r.status_code < 300, r.text[:300]
        size = len(r.content)
    per_thread = max(1, n // concurrency)

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(per_thread):
                assert request(c).status_code < 300

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "rps": per_thread * concurrency / elapsed,
        "bytes": size,
    }


def mixed_load(url: str, job_id: str, clients: int, duration: float) -> dict[str, dict]:
    """``clients`` threads for ``duration`` s, each looping POST /jobs, GET results, GET the SSE stream."""
    kinds = {
        "POST /jobs": lambda c: c.post("/jobs", json=SPEC),
        "GET /jobs/{id}/results": lambda c: c.get(f"/jobs/{job_id}/results"),
        "GET /jobs/{id}/events (SSE)": lambda c: c.get(f"/jobs/{job_id}/events"),
    }
    latencies: dict[str, list[float]] = {k: [] for k in kinds}
    errors: dict[str, int] = dict.fromkeys(kinds, 0)
    lock = threading.Lock()
    start = threading.Barrier(clients)
    stop_at: list[float] = []

    def client() -> None:
        mine = {k: [] for k in kinds}
        bad = dict.fromkeys(kinds, 0)
        with httpx.Client(base_url=url, timeout=60) as c:
            start.wait()
            if not stop_at:
                stop_at.append(time.perf_counter() + duration)
            while time.perf_counter() < stop_at[0]:
                for kind, request in kinds.items():
                    t0 = time.perf_counter()
                    try:
                        status = request(c).status_code
                    except httpx.HTTPError:
                        status = 599  # a dropped connection counts as a server error
                    mine[kind].append(time.perf_counter() - t0)
                    bad[kind] += status >= 500
        with lock:
            for kind in kinds:
                latencies[kind] += mine[kind]
                errors[kind] += bad[kind]

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    out = {}
    for kind, values in latencies.items():
        values.sort()
        out[kind] = {
            "n": len(values),
            "rps": len(values) / elapsed,
            "p50_ms": 1000 * statistics.median(values) if values else float("nan"),
            "p99_ms": 1000 * values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("nan"),
            "5xx": errors[kind],
        }
    return out


def main_mixed(clients: int, duration: float) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from pg import start_server as start_pg

    pg = start_pg()
    table = []
    try:
        for backend in ("sqlite", "postgresql"):
            with tempfile.TemporaryDirectory() as tmp:
                state = Path(tmp)
                store_url = pg.url(pg.create_db()) if backend == "postgresql" else None
                job_id = prepare_store(state, store_url)
                proc, url = start_server("service", state, store_url)
                try:
                    for kind, m in mixed_load(url, job_id, clients, duration).items():
                        table.append((backend, kind, m))
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
    finally:
        pg.stop()
        shutil.rmtree(pg.root, ignore_errors=True)
    print(f"CPUs: {os.cpu_count()}, {clients} client threads for {duration:.0f} s per backend, one uvicorn process")
    print(
        f"| {'backend':10} | {'request':28} | {'count':>6} | {'req/s':>6} | {'p50 ms':>7} | {'p99 ms':>8} | "
        f"{'5xx':>4} |"
    )
    print(f"|{'-' * 12}|{'-' * 30}|{'-' * 8}|{'-' * 8}|{'-' * 9}|{'-' * 10}|{'-' * 6}|")
    for backend, kind, m in table:
        print(
            f"| {backend:10} | {kind:28} | {m['n']:6d} | {m['rps']:6.1f} | {m['p50_ms']:7.1f} | "
            f"{m['p99_ms']:8.1f} | {m['5xx']:4d} |"
        )
    p99 = {b: max(m["p99_ms"] for bb, _, m in table if bb == b) for b in ("sqlite", "postgresql")}
    errors = sum(m["5xx"] for _, _, m in table)
    print(
        f"goals: zero 5xx: {'met' if errors == 0 else f'NOT met ({errors})'}; PostgreSQL p99 within 2x SQLite's "
        f"(worst kind {p99['postgresql']:.0f} ms vs {p99['sqlite']:.0f} ms): "
        f"{'met' if p99['postgresql'] <= 2 * p99['sqlite'] else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--post-requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--serve", choices=["bare", "service"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    parser.add_argument("--mixed", action="store_true", help="mixed load on SQLite and PostgreSQL")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.state, args.store_url)
        return
    if args.mixed:
        main_mixed(args.clients, args.duration)
        return

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        job_id = prepare_store(state)
        rows = []
        for kind in ("bare", "service"):
            proc, url = start_server(kind, state)
            try:
                if kind == "bare":
                    rows.append(("GET /bare", measure(url, lambda c: c.get("/bare"), args.requests, args.concurrency)))
                else:
                    rows.append(
                        (
                            "GET /jobs/{id}/results (50 trials)",
                            measure(url, lambda c: c.get(f"/jobs/{job_id}/results"), args.requests, args.concurrency),
                        )
                    )
                    rows.append(
                        (
                            "POST /jobs",
                            measure(url, lambda c: c.post("/jobs", json=SPEC), args.post_requests, args.concurrency),
                        )
                    )
                    rows.append(
                        (
                            "GET /jobs/{id}",
                            measure(url, lambda c: c.get(f"/jobs/{job_id}"), args.requests, args.concurrency),
                        )
                    )
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    bare_rps = rows[0][1]["rps"]
    print(
        f"CPUs: {os.cpu_count()}, sequential latency over {args.requests} requests "
        f"({args.post_requests} for POST), throughput with {args.concurrency} client threads"
    )
    print(f"| {'endpoint':36} | {'p50 ms':>7} | {'p99 ms':>7} | {'req/s':>7} | {'vs bare':>7} | {'body bytes':>10} |")
    print(f"|{'-' * 38}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 12}|")
    for name, m in rows:
        print(
            f"| {name:36} | {m['p50_ms']:7.2f} | {m['p99_ms']:7.2f} | {m['rps']:7.0f} | "
            f"{m['rps'] / bare_rps:6.0%} | {m['bytes']:10d} |"
        )
    results = dict(rows)
    ok_results = results["GET /jobs/{id}/results (50 trials)"]["rps"] >= 0.5 * bare_rps
    ok_post = results["POST /jobs"]["p50_ms"] < 20
    print(
        f"goals: results >= 50% of bare: {'met' if ok_results else 'NOT met'}; "
        f"POST p50 < 20 ms: {'met' if ok_post else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
