"""Prometheus metrics in the text exposition format, written by hand (no global registry: one per app)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hist: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * (len(BUCKETS) + 2))
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.events_ingested = 0
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            h = self._hist[(method, route)]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h[i] += 1
                    break
            h[-2] += seconds  # sum
            h[-1] += 1  # count
            self._requests[(method, route, str(status))] += 1

    def count_events(self, n: int) -> None:
        with self._lock:
            self.events_ingested += n

    def render(self, jobs_by_status: dict[str, int], trials_running: int) -> str:
        out = [
            "# HELP longtail_jobs Jobs in the store by status.",
            "# TYPE longtail_jobs gauge",
        ]
        out += [f'longtail_jobs{{status="{s}"}} {n}' for s, n in sorted(jobs_by_status.items())]
        out += [
            "# HELP longtail_trials_running Trials reported running by running jobs.",
            "# TYPE longtail_trials_running gauge",
            f"longtail_trials_running {trials_running}",
            "# HELP longtail_events_ingested_total Driver events accepted (duplicates excluded).",
            "# TYPE longtail_events_ingested_total counter",
            f"longtail_events_ingested_total {self.events_ingested}",
            "# HELP longtail_http_requests_total HTTP requests by method, route and status.",
            "# TYPE longtail_http_requests_total counter",
        ]
        with self._lock:
            requests = dict(self._requests)
            hist = {k: list(v) for k, v in self._hist.items()}
        for (method, route, status), n in sorted(requests.items()):
            out.append(f'longtail_http_requests_total{{method="{method}",route="{_esc(route)}",status="{status}"}} {n}')
        out += [
            "# HELP longtail_http_request_duration_seconds Request latency by method and route.",
            "# TYPE longtail_http_request_duration_seconds histogram",
        ]
        for (method, route), h in sorted(hist.items()):
            labels = f'method="{method}",route="{_esc(route)}"'
            cumulative = 0.0
            for bound, n in zip(BUCKETS, h[: len(BUCKETS)], strict=False):
                cumulative += n
                out.append(f'longtail_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {cumulative:g}')
            out.append(f'longtail_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {h[-1]:g}')
            out.append(f"longtail_http_request_duration_seconds_sum{{{labels}}} {h[-2]:.6f}")
            out.append(f"longtail_http_request_duration_seconds_count{{{labels}}} {h[-1]:g}")
        return "\n".join(out) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsMiddleware:
    """Times every HTTP request, labelled by its route template (not the raw path: bounded cardinality)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], name, status[0], time.perf_counter() - start)
