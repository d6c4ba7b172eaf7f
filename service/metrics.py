"""Prometheus metrics with ``prometheus_client``, in a ``CollectorRegistry`` of each app's own.

No metric is registered in the library's global registry: two apps in one process (tests, an embedding program)
each count their own requests and never collide on a name. ``/metrics`` renders one app's registry in the text
exposition format (``service.routers.health``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the format generate_latest writes
EXPOSED = (
    "longtail_jobs",
    "longtail_trials_running",
    "longtail_events_ingested_total",
    "longtail_http_requests_total",
    *(f"longtail_http_request_duration_seconds{suffix}" for suffix in ("_bucket", "_count", "_sum")),
)


class Metrics:
    """One app's metrics: requests and their latency, driver events, and the store's jobs and trials."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge("longtail_jobs", "Jobs in the store by status.", ["status"], registry=self.registry)
        self.trials_running = Gauge(
            "longtail_trials_running", "Trials reported running by running jobs.", registry=self.registry
        )
        self.events_ingested = Counter(
            "longtail_events_ingested", "Driver events accepted (duplicates excluded).", registry=self.registry
        )
        self.requests = Counter(
            "longtail_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "longtail_http_request_duration_seconds",
            "Request latency by method and route.",
            ["method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._render_lock = threading.Lock()  # the store's gauges are set and rendered by one scrape at a time
        # The series /metrics shows: prometheus_client's *_created timestamps left out (they were never exposed).
        self._exposed = self.registry.restricted_registry(EXPOSED)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route).observe(seconds)
        self.requests.labels(method, route, str(status)).inc()

    def count_events(self, n: int) -> None:
        self.events_ingested.inc(n)

    def render(self, jobs_by_status: dict[str, int], trials_running: int) -> bytes:
        """The registry in the text format, with the store's counts read just before (they live in the store)."""
        with self._render_lock:
            for status, n in jobs_by_status.items():
                self.jobs.labels(status).set(n)
            self.trials_running.set(trials_running)
            return generate_latest(self._exposed)


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
