"""Session-wide fixtures: one local Ray per test session (2 CPUs, dashboard on loopback, usage stats off)."""

from __future__ import annotations

import os

import pytest
from pg import pg_server  # noqa: F401 - the session's PostgreSQL server, for the tests that use it

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A loopback test cluster: no token auth, the same on every side (driver, Jobs client, `ray start`).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


@pytest.fixture(scope="module")
def ray_session():
    """A real local Ray for the modules that use it, shut down at the module's end.

    Not session-wide: tests that start a Ray of their own (the demo, the `ray start` cluster) must not find a
    second one on the machine (both would want the dashboard agent's fixed port).
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()
