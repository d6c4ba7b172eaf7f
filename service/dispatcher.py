"""Dispatch to Ray: the only module of ``service`` that imports Ray.

Each job runs as its own Ray job through the Jobs API (one driver process per job, ``python -m jobs.driver``), so a
crashing job cannot take the API down. The Jobs client is synchronous; every call runs off the event loop
(``asyncio.to_thread``).

Modes: with no ``ray_address`` (embedded) the service runs a local Ray head as a process of its own, outside the
service's process group and session (``service.ray_head``: ``ray start --head``, recorded in the state directory),
and reattaches to it on the next start, so a restarted or killed service leaves its jobs running; with
``stop_ray_on_exit`` the service stops that head when it stops. With a ``ray_address`` it talks to an existing
cluster through its dashboard (``ray_dashboard_url``, default port 8265 on the address's host). Either way it never
joins the cluster as a driver.

Errors: ``Unavailable`` when Ray cannot be reached; ``get_driver`` answers ``DriverState.UNKNOWN`` for a submission
the cluster does not know (it was restarted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from service.errors import Unavailable
from service.settings import Settings

logger = logging.getLogger("service.dispatcher")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class DriverState(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    UNKNOWN = "UNKNOWN"  # the cluster has no such job


@dataclass(frozen=True)
class DriverInfo:
    state: DriverState
    message: str = ""


@dataclass(frozen=True)
class Submission:
    """What a driver needs: its job, the (resolved) spec JSON, the per-job secret and where to report.

    ``secret`` stays in the service: the driver reads it from ``secret_file`` (0600, under the service's secrets
    folder), because Ray's Jobs API shows a job's entrypoint and ``runtime_env`` to anyone who can reach it.
    """

    job_id: str
    submission_id: str
    spec_json: str
    secret: str
    service_url: str
    storage_path: str
    secret_file: str = ""


class Dispatcher(Protocol):
    """What the service needs from a cluster. ``RayDispatcher`` is the real one, ``service.testing`` has a fake."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def node_resources(self) -> list[dict[str, float]]:
        """Total resources of each alive node at the last refresh ([] when unknown). Never blocks."""
        ...

    async def refresh(self) -> None: ...

    async def submit(self, submission: Submission) -> None: ...

    async def cancel(self, submission_id: str) -> None: ...

    async def get_driver(self, submission_id: str) -> DriverInfo: ...

    async def logs(self, submission_id: str) -> str: ...

    async def ready(self) -> str | None:
        """None when the cluster answers, else the reason it does not."""
        ...


def driver_entrypoint(sub: Submission, python: str = sys.executable) -> str:
    """The Ray job's shell command (an absolute interpreter: the raylet's PATH is not ours)."""
    import shlex

    args = [
        python,
        "-m",
        "jobs.driver",
        "--job-id",
        sub.job_id,
        "--service-url",
        sub.service_url,
        "--storage-path",
        sub.storage_path,
    ]
    if sub.secret_file:
        args += ["--secret-file", sub.secret_file]
    return " ".join(shlex.quote(a) for a in args)


def driver_env(sub: Submission) -> dict[str, str]:
    """Environment of the driver: the spec, never the secret (Ray's Jobs API and logs show ``runtime_env``)."""
    pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {"LONGTAIL_JOB_SPEC": sub.spec_json, "PYTHONPATH": pythonpath}
    for key in ("RAY_AUTH_MODE",):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _token_available() -> bool:
    """A Ray auth token where Ray looks: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, ~/.ray/auth_token."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return bool(
        os.environ.get("RAY_AUTH_TOKEN")
        or (path and Path(path).is_file())
        or (Path.home() / ".ray" / "auth_token").is_file()
    )


def _dashboard_from_address(address: str) -> str:
    if address in ("auto", "local", ""):
        return "http://127.0.0.1:8265"
    host = urlparse(address if "://" in address else f"ray://{address}").hostname or "127.0.0.1"
    return f"http://{host}:8265"


class RayDispatcher:
    """Ray Jobs API dispatch, in embedded mode (a local Ray in this process) or against a cluster."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dashboard_url: str | None = settings.ray_dashboard_url
        self._client: Any = None
        self._nodes: list[dict[str, float]] = []
        self._head_state_dir: Path | None = None  # embedded mode: whose recorded head we use
        self.last_error: str | None = None
        self.last_refresh: float = 0.0

    # -- lifecycle -------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.settings.ray_address is None:
            await asyncio.to_thread(self._start_embedded)
        elif self.dashboard_url is None:
            self.dashboard_url = _dashboard_from_address(self.settings.ray_address)
        try:
            await self.refresh()
        except Unavailable as exc:
            logger.warning("Ray is not reachable yet: %s", exc)

    def _start_embedded(self) -> None:
        # The head, the Jobs client here and the drivers (driver_env) must agree on token auth: Ray's default
        # (token) unless the environment says otherwise, set before Ray reads its config.
        mode = os.environ.setdefault("RAY_AUTH_MODE", "token")
        import ray

        if ray.is_initialized():  # someone in this process started Ray already (tests): use it
            from ray._private.worker import get_dashboard_url

            url = get_dashboard_url()
            if self.dashboard_url is None:
                self.dashboard_url = url if url.startswith("http") else f"http://{url}"
            return
        from service.ray_head import ensure_head

        if mode == "token":
            from ray._private.authentication import authentication_token_setup as auth

            auth._enable_token_auth()  # this process's cached Ray config follows the variable
            if not _token_available():  # `ray start` makes none (ray.init does): ~/.ray/auth_token
                auth.generate_and_save_token()
        assert self.settings.state_dir is not None
        record, started = ensure_head(
            self.settings.state_dir, num_cpus=self.settings.ray_num_cpus, num_gpus=self.settings.ray_num_gpus
        )
        self._head_state_dir = self.settings.state_dir
        if self.dashboard_url is None:
            self.dashboard_url = record.dashboard_url
        logger.info(
            "%s the embedded Ray head at %s; dashboard and Jobs API at %s",
            "started" if started else "reattached to",
            record.address,
            self.dashboard_url,
        )

    async def stop(self) -> None:
        """Leave the embedded head running (jobs go on; the next start reattaches), unless ``stop_ray_on_exit``."""
        if self._head_state_dir is not None and self.settings.stop_ray_on_exit:
            from service.ray_head import stop_head

            await asyncio.to_thread(stop_head, self._head_state_dir)
            logger.info("stopped the embedded Ray head (stop_ray_on_exit)")
            self._head_state_dir = None

    # -- cluster state ---------------------------------------------------------------------------------------------
    def node_resources(self) -> list[dict[str, float]]:
        return list(self._nodes)

    async def refresh(self) -> None:
        self._nodes = await self._call(self._list_nodes)
        self.last_refresh = time.time()

    def _list_nodes(self) -> list[dict[str, float]]:
        from ray.util.state import list_nodes

        nodes = list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        out = []
        for node in nodes:
            total = node.resources_total if not isinstance(node, dict) else node.get("resources_total", {})
            out.append({k: float(v) for k, v in (total or {}).items() if k in ("CPU", "GPU", "memory")})
        return out

    def _jobs_client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.dashboard_url)
        return self._client

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await asyncio.to_thread(fn, *args, **kwargs)
        except (ConnectionError, OSError, TimeoutError) as exc:
            self._client = None
            self.last_error = f"Ray is not reachable at {self.dashboard_url}: {exc}"
            raise Unavailable(self.last_error) from exc
        except RuntimeError as exc:
            if _not_found(exc):
                raise
            self._client = None
            self.last_error = f"Ray Jobs API error at {self.dashboard_url}: {exc}"
            raise Unavailable(self.last_error) from exc
        self.last_error = None
        return result

    # -- jobs ------------------------------------------------------------------------------------------------------
    async def submit(self, submission: Submission) -> None:
        def _submit() -> None:
            try:
                self._jobs_client().submit_job(
                    entrypoint=driver_entrypoint(submission),
                    submission_id=submission.submission_id,
                    runtime_env={"env_vars": driver_env(submission)},
                    metadata={"longtail_job_id": submission.job_id},
                )
            except RuntimeError as exc:
                if "already exists" in str(exc):  # an earlier attempt got through after all
                    return
                raise

        await self._call(_submit)

    async def cancel(self, submission_id: str) -> None:
        try:
            await self._call(lambda: self._jobs_client().stop_job(submission_id))
        except RuntimeError as exc:  # not found: nothing to stop
            logger.info("stop_job(%s): %s", submission_id, exc)

    async def get_driver(self, submission_id: str) -> DriverInfo:
        try:
            info = await self._call(lambda: self._jobs_client().get_job_info(submission_id))
        except RuntimeError:
            return DriverInfo(DriverState.UNKNOWN, "the Ray cluster does not know this job")
        return DriverInfo(
            DriverState(str(info.status.value if hasattr(info.status, "value") else info.status)), info.message or ""
        )

    async def logs(self, submission_id: str) -> str:
        try:
            return await self._call(lambda: self._jobs_client().get_job_logs(submission_id))
        except RuntimeError:
            return ""

    async def ready(self) -> str | None:
        try:
            await asyncio.wait_for(self.refresh(), timeout=5)
        except Unavailable as exc:
            return exc.message
        except asyncio.TimeoutError:
            return f"Ray did not answer within 5 s at {self.dashboard_url}"
        return None


def _not_found(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    return "does not exist" in text or "not found" in text or "404" in text
