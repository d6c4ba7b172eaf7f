"""Python client of the longtail service: ``Client`` (blocking) and ``AsyncClient`` (asyncio), same methods.

    >>> from service.client import Client
    >>> with Client("http://127.0.0.1:8000") as lt:               # token=... when the service has API tokens
    ...     job = lt.submit("examples/digits-demo.yaml")           # a JobSpec, a dict, or a YAML/JSON file
    ...     job = lt.wait(job.id, on_progress=lambda j: print(j.progress.trials_done))
    ...     print(lt.results(job.id).to_dataframe())                # needs pandas

Transient failures (connection refused while the service restarts, 502/503/504, a dropped connection on a safe
request) are retried with exponential backoff, ``retries`` times. ``submit`` always sends an ``Idempotency-Key``
(a random one unless given), so a retried submission never creates a second job. ``wait`` follows the job's
server-sent events (``/jobs/{id}/events``) and falls back to polling when the stream is unavailable.

Errors (each carries ``status_code``, ``code``, ``message`` and ``details`` from the service's
``{"error": {"code", "message", "details"}}``)::

    LongtailError                 base class
    ├── ValidationFailed    422   details: [{"loc": "losses[0].gamma", "msg": ...}]
    │   └── SpecFileError         a local spec file that cannot be read, parsed or validated (never sent)
    ├── Unauthorized        401   missing or invalid token
    ├── Forbidden           403
    ├── NotFound            404   unknown job (or another owner's)
    ├── Conflict            409   e.g. cancelling a finished job, an Idempotency-Key reused with another body
    ├── PayloadTooLarge     413
    ├── QuotaExceeded       429   too many queued or running jobs
    ├── ServiceUnavailable        unreachable, or 5xx after the retries
    └── WaitTimeout               ``wait`` passed its deadline (also a ``TimeoutError``)
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import ConfigDict, PrivateAttr, ValidationError

from jobs.spec import JobSpec
from service.schemas import JobRead, JobResults, Progress
from service.status import JobStatus

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "Forbidden",
    "Job",
    "JobStatus",
    "LongtailError",
    "NotFound",
    "PayloadTooLarge",
    "Progress",
    "QuotaExceeded",
    "Results",
    "ServiceUnavailable",
    "SpecFileError",
    "Unauthorized",
    "ValidationFailed",
    "WaitTimeout",
    "load_spec",
]

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUS = frozenset({502, 503, 504})
SpecLike = JobSpec | dict[str, Any] | str | os.PathLike[str]
ProgressCallback = Callable[["Job"], Any]


# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------
class LongtailError(Exception):
    """An error from the service (or on the way to it), with the service's message and details."""

    status_code: int | None = None

    def __init__(
        self, message: str, *, code: str | None = None, details: Any = None, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details
        if status_code is not None:
            self.status_code = status_code

    def __str__(self) -> str:
        return self.message + _format_details(self.details)


class ValidationFailed(LongtailError):
    """422: the spec (or a query) is invalid; ``details`` lists ``{"loc", "msg"}`` per field."""

    status_code = 422

    @property
    def field_errors(self) -> dict[str, str]:
        """``{field path: message}`` of every problem."""
        if not isinstance(self.details, list):
            return {}
        return {str(d.get("loc", "")): str(d.get("msg", "")) for d in self.details if isinstance(d, dict)}


class SpecFileError(ValidationFailed):
    """A local spec file could not be read, parsed or validated; nothing was sent."""

    status_code = None

    def __init__(self, path: str | os.PathLike[str], problem: str, details: Any = None) -> None:
        super().__init__(f"{os.fspath(path)}: {problem}", code="invalid_spec_file", details=details)
        self.path = os.fspath(path)


class Unauthorized(LongtailError):
    status_code = 401


class Forbidden(LongtailError):
    status_code = 403


class NotFound(LongtailError):
    status_code = 404


class Conflict(LongtailError):
    status_code = 409


class PayloadTooLarge(LongtailError):
    status_code = 413


class QuotaExceeded(LongtailError):
    status_code = 429


class ServiceUnavailable(LongtailError):
    """The service could not be reached, or kept answering 5xx after the retries."""


class WaitTimeout(LongtailError, TimeoutError):
    """``wait`` reached its deadline; ``job`` is the last state seen (or None)."""

    def __init__(self, message: str, job: Job | None = None) -> None:
        super().__init__(message, code="timeout")
        self.job = job


_BY_STATUS: dict[int, type[LongtailError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: QuotaExceeded,
}


def _format_details(details: Any) -> str:
    """``": losses[0].gamma: must be >= 0; train.epochs: ..."`` for field details, else nothing."""
    if not isinstance(details, list) or not details:
        return ""
    parts = []
    for d in details:
        if isinstance(d, dict) and "msg" in d:
            parts.append(f"{d['loc']}: {d['msg']}" if d.get("loc") else str(d["msg"]))
    return (": " + "; ".join(parts)) if parts else ""


def error_from_response(response: httpx.Response) -> LongtailError:
    """The typed exception for an error response (the service's ``{"error": {...}}`` body, or its text)."""
    code, details = None, None
    message = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code, details = err.get("code"), err.get("details")
        message = str(err.get("message") or message)
    elif isinstance(body, dict) and "detail" in body:
        message = str(body["detail"])
    elif response.text:
        message = f"{message}: {response.text.strip()[:200]}"
    status = response.status_code
    if status >= 500:
        return ServiceUnavailable(
            f"the service answered {status}: {message}", code=code, details=details, status_code=status
        )
    cls = _BY_STATUS.get(status, LongtailError)
    return cls(message, code=code, details=details, status_code=status)


# --------------------------------------------------------------------------------------------------------------
# Models (the server's own schemas, lenient to fields a newer server adds)
# --------------------------------------------------------------------------------------------------------------
class Job(JobRead):
    """A job as ``GET /jobs/{id}`` returns it; ``raw`` is the exact JSON payload."""

    model_config = ConfigDict(extra="allow")
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Job:
        job = cls.model_validate(payload)
        job._raw = payload
        return job

    @property
    def raw(self) -> dict[str, Any]:
        return self._raw or self.model_dump(mode="json")

    @property
    def done(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self.status.terminal

    @property
    def job_spec(self) -> JobSpec:
        """The spec as the service stored it, as a ``JobSpec``."""
        return JobSpec.model_validate(self.spec)


class Results(JobResults):
    """A job's results (docs/ARCHITECTURE.md's JobResult plus ``job_id``, ``status``, ``complete``)."""

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Results:
        results = cls.model_validate(payload)
        results._raw = payload
        return results

    @property
    def raw(self) -> dict[str, Any]:
        """The exact JSON payload of ``GET /jobs/{id}/results``."""
        return self._raw or self.model_dump(mode="json")

    def trial(self, trial_id: str | None) -> dict[str, Any] | None:
        return next((t for t in self.trials if t.get("trial_id") == trial_id), None)

    @property
    def control(self) -> dict[str, Any] | None:
        """The cross-entropy control trial, if the job has one."""
        return self.trial(self.control_trial_id)

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per loss branch (and the control first): the comparison table's content."""
        rows = []
        control = self.control
        if control is not None and control.get("best"):
            row = _row("control", control, self.metric, gain=0.0, is_control=True)
            seeds = [t for t in self.trials if t.get("is_control") and t.get("best")]
            if len(seeds) > 1:  # the control's figures are its mean over seeds, as the branches' are
                for key in ("balanced_accuracy", "accuracy", *SHOT_KEYS):
                    values = [t["best"]["metrics"].get(key) for t in seeds]
                    if all(isinstance(v, (int, float)) for v in values):
                        row[key] = sum(values) / len(values)
            row.update(n_seeds=len(seeds), config=_without_identity(row["config"]))
            rows.append(row)
            posthoc = self.get("control_posthoc")
            if posthoc:  # "CE + post-hoc LA": the control's own logit adjustment, tau chosen on validation
                rows.append(_posthoc_row(posthoc, control, self.metric))
        for b in self.branches:
            trial = self.trial(b.get("best_trial_id")) or {}
            metrics = b.get("best_metrics") or ((trial.get("best") or {}).get("metrics")) or {}
            row = _row(b.get("branch"), trial, self.metric, gain=b.get("gain"), metrics=metrics)
            ci = b.get("gain_ci95")
            row.update(
                best_value=b.get("best_value"),
                config_id=b.get("config_id"),
                config=b.get("config") if b.get("config") is not None else row["config"],
                n_seeds=b.get("n_seeds"),
                test_std=b.get("test_std"),
                gain_std=b.get("gain_std"),
                gain_ci95_lo=ci[0] if ci else None,
                gain_ci95_hi=ci[1] if ci else None,
                significant=b.get("significant"),
            )
            rows.append(row)
        return rows

    def to_dataframe(self) -> Any:
        """``rows()`` as a pandas DataFrame indexed by branch (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Results.to_dataframe() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.rows()).set_index("branch")


SHOT_KEYS = ("many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy")
POSTHOC_LA_BRANCH = "ce+posthoc-la"


def _posthoc_row(posthoc: dict[str, Any], control: dict[str, Any], metric: str) -> dict[str, Any]:
    """The table row of the control with post-hoc logit adjustment; its gain is over the raw control."""
    metrics = posthoc.get("metrics") or {}
    ci = posthoc.get("gain_ci95")
    row = _row(POSTHOC_LA_BRANCH, control, metric, gain=posthoc.get("gain"), metrics=metrics)
    row.update(
        best_value=posthoc.get("test_mean"),
        n_seeds=posthoc.get("n_seeds"),
        test_std=posthoc.get("test_std"),
        gain_std=posthoc.get("gain_std"),
        gain_ci95_lo=ci[0] if ci else None,
        gain_ci95_hi=ci[1] if ci else None,
        significant=bool(ci and (ci[0] > 0 or ci[1] < 0)),
        config={**_without_identity(row["config"]), "posthoc": "logit_adjustment", "tau": posthoc.get("tau")},
        is_posthoc=True,
    )
    if metric not in metrics and posthoc.get("test_mean") is not None:
        row[metric] = posthoc["test_mean"]
    return row


def _without_identity(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("train.seed", "seed", "config_id")}


def _row(
    branch: Any,
    trial: dict[str, Any],
    metric: str,
    *,
    gain: float | None,
    is_control: bool = False,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    best = trial.get("best") or {}
    metrics = metrics if metrics is not None else (best.get("metrics") or {})
    return {
        "branch": branch,
        "is_control": is_control,
        "trial_id": trial.get("trial_id"),
        "epoch": best.get("epoch"),
        "metric": metric,
        "best_value": best.get("value"),
        "balanced_accuracy": metrics.get("balanced_accuracy"),
        "accuracy": metrics.get("accuracy"),
        **{k: metrics.get(k) for k in SHOT_KEYS},
        "gain": gain,
        "gain_std": None,
        "gain_ci95_lo": None,
        "gain_ci95_hi": None,
        "significant": None,
        "n_seeds": 1 if best else 0,
        "test_std": None,
        "config_id": trial.get("config_id"),
        "config": trial.get("config") or {},
    }


# --------------------------------------------------------------------------------------------------------------
# Spec files
# --------------------------------------------------------------------------------------------------------------
def load_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML or JSON spec file and validate it as a ``JobSpec``; returns the data to send.

    Raises ``SpecFileError`` naming the file, and the field for a spec that does not validate.
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecFileError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecFileError(path, f"cannot read it ({exc.__class__.__name__}: {exc})") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise SpecFileError(path, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecFileError(path, f"invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise SpecFileError(path, f"expected a mapping (a job spec) at the top, got {type(data).__name__}")
    try:
        JobSpec.model_validate(data)
    except ValidationError as exc:
        from service.validation import validation_details

        details = validation_details(exc, data)
        raise SpecFileError(path, "invalid job spec", details) from None
    return data


def spec_payload(spec: SpecLike) -> dict[str, Any]:
    """The JSON body for ``POST /jobs``."""
    if isinstance(spec, JobSpec):
        return spec.model_dump(mode="json")
    if isinstance(spec, dict):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec)
    raise TypeError(f"expected a JobSpec, a dict or a spec file path, got {type(spec).__name__}")


# --------------------------------------------------------------------------------------------------------------
# Shared plumbing
# --------------------------------------------------------------------------------------------------------------
def _headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "longtail-client/0.1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _unreachable(base_url: str, exc: Exception) -> ServiceUnavailable:
    reason = str(exc) or exc.__class__.__name__
    if isinstance(exc, httpx.ConnectError) and ("refused" in reason.lower() or "errno 111" in reason.lower()):
        reason = "connection refused"
    return ServiceUnavailable(f"cannot reach the longtail service at {base_url} ({reason})", code="unreachable")


def _retryable_exception(exc: Exception, method: str, idempotent: bool) -> bool:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True  # the request never reached the service
    if isinstance(exc, (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout, httpx.WriteError)):
        return idempotent or method == "GET"
    return False


def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str | None, str | None, str]]:
    """(id, event, data) per server-sent event; comments (heartbeats) are skipped."""
    event_id, event, data = None, None, []
    for line in lines:
        if line == "":
            if data or event:
                yield event_id, event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = value
        elif field == "event":
            event = value
        elif field == "data":
            data.append(value)


class _Base:
    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        poll_interval: float = 1.0,
        on_retry: Callable[[int, str, float], Any] | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("LONGTAIL_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else (os.environ.get("LONGTAIL_TOKEN") or None)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.poll_interval = poll_interval
        self.on_retry = on_retry

    def _delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * (2**attempt))

    def _note_retry(self, attempt: int, reason: str, delay: float) -> None:
        if self.on_retry is not None:
            self.on_retry(attempt, reason, delay)

    @staticmethod
    def _statuses(status: Any) -> list[str] | None:
        if status is None:
            return None
        if isinstance(status, (str, JobStatus)):
            status = [status]
        return [str(JobStatus(str(s))) for s in status]


class Client(_Base):
    """A blocking client. Use as a context manager, or call ``close()``.

    Args:
        base_url: the service (default ``$LONGTAIL_URL`` or http://127.0.0.1:8000).
        token: the bearer token (default ``$LONGTAIL_TOKEN``).
        timeout: seconds per request.
        retries: attempts after the first for transient failures (exponential backoff from ``backoff`` seconds,
            capped at ``max_backoff``).
        on_retry: called as ``on_retry(attempt, reason, delay_s)`` before each retry.
    """

    def __init__(self, base_url: str | None = None, token: str | None = None, **kwargs: Any) -> None:
        transport = kwargs.pop("transport", None)
        super().__init__(base_url, token, **kwargs)
        self._http = httpx.Client(
            base_url=self.base_url, headers=_headers(self.token), timeout=self.timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retries or not _retryable_exception(exc, method, idempotent):
                    raise _unreachable(self.base_url, exc) from None
                reason = f"{exc.__class__.__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUS or attempt >= self.retries:
                    raise error_from_response(response)
                reason = f"HTTP {response.status_code}"
            delay = self._delay(attempt)
            self._note_retry(attempt + 1, reason, delay)
            time.sleep(delay)
            attempt += 1

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- jobs ------------------------------------------------------------------------------------------------------
    def submit(self, spec: SpecLike, idempotency_key: str | None = None) -> Job:
        """Queue a job from a ``JobSpec``, a dict, or a YAML/JSON file (validated locally first)."""
        body = spec_payload(spec)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return Job.from_payload(self._json("POST", "/jobs", json=body, headers=headers))

    def get(self, job_id: str) -> Job:
        return Job.from_payload(self._json("GET", f"/jobs/{job_id}"))

    def list(self, status: Any = None, *, limit: int | None = None, page_size: int = 200) -> list[Job]:
        """The caller's jobs, newest first (every page; ``limit`` caps the total)."""
        jobs: list[Job] = []
        params: dict[str, Any] = {"limit": page_size}
        statuses = self._statuses(status)
        if statuses:
            params["status"] = statuses
        while True:
            page = self._json("GET", "/jobs", params=params)
            jobs.extend(Job.from_payload(item) for item in page["items"])
            if not page.get("next_cursor") or (limit is not None and len(jobs) >= limit):
                return jobs[:limit] if limit is not None else jobs
            params["cursor"] = page["next_cursor"]

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (``Conflict`` once it finished)."""
        return Job.from_payload(self._json("POST", f"/jobs/{job_id}/cancel", idempotent=False))

    def results(self, job_id: str) -> Results:
        """The job's results (partial, ``complete=False``, until it finished)."""
        return Results.from_payload(self._json("GET", f"/jobs/{job_id}/results"))

    def logs(self, job_id: str, tail: int = 200) -> str:
        return self._request("GET", f"/jobs/{job_id}/logs", params={"tail": tail}).text

    def download_model(
        self,
        job_id: str,
        path: str | os.PathLike[str],
        *,
        trial_id: str | None = None,
        format: str = "checkpoint",  # noqa: A002 - the query name
    ) -> Path:
        """Save the job's model (best finished trial at its selected epoch, or ``trial_id``'s) to ``path``.

        ``format="checkpoint"``: a model file for ``lt_core.load_model``; ``"exported"``: a zip of a ``torch.export``
        program (``model.pt2``) and ``manifest.json``. ``Conflict`` while no trial has finished.
        """
        route = f"/jobs/{job_id}/model" if trial_id is None else f"/jobs/{job_id}/trials/{trial_id}/model"
        data = self._request("GET", route, params={"format": format}).content
        target = Path(path)
        target.write_bytes(data)
        return target

    def predict(
        self,
        job_id: str,
        rows: Any,
        *,
        trial_id: str | None = None,
        posthoc: str | float = "auto",
        top_k: int = 5,
    ) -> dict[str, Any]:
        """Top-k classes per row from the job's model on the service (rows: the input shape, flattened)."""
        import numpy as np

        body: dict[str, Any] = {"rows": np.asarray(rows, dtype=float).reshape(len(rows), -1).tolist(), "top_k": top_k}
        body["posthoc"] = posthoc
        if trial_id is not None:
            body["trial_id"] = trial_id
        return self._json("POST", f"/jobs/{job_id}/predict", json=body, idempotent=True)

    def delete(self, job_id: str) -> dict[str, Any]:
        """Delete a finished job with its checkpoints and rows (``Conflict`` while it is queued or running)."""
        return self._json("DELETE", f"/jobs/{job_id}", idempotent=False)

    def wait(self, job_id: str, timeout: float | None = None, on_progress: ProgressCallback | None = None) -> Job:
        """Block until the job finished (following its events, else polling); return the final ``Job``.

        ``on_progress(job)`` is called with the job's state whenever something happened. Raises ``WaitTimeout``
        after ``timeout`` seconds (None: no deadline).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        if on_progress is not None:
            on_progress(job)
        last_id: str | None = None
        use_sse = True
        while not job.done:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s", job)
            if use_sse:
                try:
                    for event_id, _kind in self._events(job_id, last_id, remaining):
                        last_id = event_id or last_id
                        job = self.get(job_id)
                        if on_progress is not None:
                            on_progress(job)
                        if job.done or (deadline is not None and time.monotonic() >= deadline):
                            break
                    job = self.get(job_id)
                    continue
                except (httpx.TransportError, httpx.HTTPStatusError, ServiceUnavailable):
                    use_sse = False  # no stream (a proxy, an older service): poll
                    job = self.get(job_id)
                    continue
            pause = self.poll_interval if remaining is None else max(0.0, min(self.poll_interval, remaining))
            time.sleep(pause)
            previous = job
            job = self.get(job_id)
            if on_progress is not None and (job.progress != previous.progress or job.status != previous.status):
                on_progress(job)
        if on_progress is not None:
            on_progress(job)
        return job

    def _events(self, job_id: str, last_id: str | None, remaining: float | None) -> Iterator[tuple[str | None, str]]:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        read = 60.0 if remaining is None else max(0.1, min(60.0, remaining))
        timeout = httpx.Timeout(self.timeout, read=read)
        with self._http.stream("GET", f"/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                if response.status_code in (401, 403, 404):
                    raise error_from_response(response)
                response.raise_for_status()
            try:
                for event_id, kind, _data in _parse_sse(response.iter_lines()):
                    yield event_id, kind or "message"
            except httpx.ReadTimeout:
                return  # a quiet stream: the caller re-checks the job and the deadline

    # -- catalogs and health ---------------------------------------------------------------------------------------
    def losses(self) -> list[dict[str, Any]]:
        return self._json("GET", "/losses")

    def datasets(self) -> list[dict[str, Any]]:
        return self._json("GET", "/datasets")

    def models(self) -> list[dict[str, Any]]:
        return self._json("GET", "/models")

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """``/readyz``'s body (``status`` is "ready" or "unready"); no retries on 503."""
        try:
            response = self._http.get("/readyz")
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from None
        if response.status_code in (200, 503):
            return response.json()
        raise error_from_response(response)


class AsyncClient(_Base):
    """The asyncio twin of ``Client`` (``async with AsyncClient(...) as lt: await lt.submit(...)``)."""

    def __init__(self, base_url: str | None = None, token: str | None = None, **kwargs: Any) -> None:
        transport = kwargs.pop("transport", None)
        super().__init__(base_url, token, **kwargs)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=_headers(self.token), timeout=self.timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retries or not _retryable_exception(exc, method, idempotent):
                    raise _unreachable(self.base_url, exc) from None
                reason = f"{exc.__class__.__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUS or attempt >= self.retries:
                    raise error_from_response(response)
                reason = f"HTTP {response.status_code}"
            delay = self._delay(attempt)
            self._note_retry(attempt + 1, reason, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._request(method, path, **kwargs)).json()

    async def submit(self, spec: SpecLike, idempotency_key: str | None = None) -> Job:
        body = spec_payload(spec)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return Job.from_payload(await self._json("POST", "/jobs", json=body, headers=headers))

    async def get(self, job_id: str) -> Job:
        return Job.from_payload(await self._json("GET", f"/jobs/{job_id}"))

    async def list(self, status: Any = None, *, limit: int | None = None, page_size: int = 200) -> list[Job]:
        jobs: list[Job] = []
        params: dict[str, Any] = {"limit": page_size}
        statuses = self._statuses(status)
        if statuses:
            params["status"] = statuses
        while True:
            page = await self._json("GET", "/jobs", params=params)
            jobs.extend(Job.from_payload(item) for item in page["items"])
            if not page.get("next_cursor") or (limit is not None and len(jobs) >= limit):
                return jobs[:limit] if limit is not None else jobs
            params["cursor"] = page["next_cursor"]

    async def cancel(self, job_id: str) -> Job:
        return Job.from_payload(await self._json("POST", f"/jobs/{job_id}/cancel", idempotent=False))

    async def results(self, job_id: str) -> Results:
        return Results.from_payload(await self._json("GET", f"/jobs/{job_id}/results"))

    async def logs(self, job_id: str, tail: int = 200) -> str:
        return (await self._request("GET", f"/jobs/{job_id}/logs", params={"tail": tail})).text

    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_progress: Callable[[Job], Any | Awaitable[Any]] | None = None,
    ) -> Job:
        """Like ``Client.wait``; ``on_progress`` may be a coroutine function."""

        async def report(job: Job) -> None:
            if on_progress is not None:
                outcome = on_progress(job)
                if asyncio.iscoroutine(outcome):
                    await outcome

        deadline = None if timeout is None else time.monotonic() + timeout
        job = await self.get(job_id)
        await report(job)
        last_id: str | None = None
        use_sse = True
        while not job.done:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s", job)
            if use_sse:
                try:
                    async for event_id, _kind in self._events(job_id, last_id, remaining):
                        last_id = event_id or last_id
                        job = await self.get(job_id)
                        await report(job)
                        if job.done or (deadline is not None and time.monotonic() >= deadline):
                            break
                    job = await self.get(job_id)
                    continue
                except (httpx.TransportError, httpx.HTTPStatusError, ServiceUnavailable):
                    use_sse = False
                    job = await self.get(job_id)
                    continue
            pause = self.poll_interval if remaining is None else max(0.0, min(self.poll_interval, remaining))
            await asyncio.sleep(pause)
            previous = job
            job = await self.get(job_id)
            if job.progress != previous.progress or job.status != previous.status:
                await report(job)
        await report(job)
        return job

    async def _events(
        self, job_id: str, last_id: str | None, remaining: float | None
    ) -> AsyncIterator[tuple[str | None, str]]:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        read = 60.0 if remaining is None else max(0.1, min(60.0, remaining))
        timeout = httpx.Timeout(self.timeout, read=read)
        async with self._http.stream("GET", f"/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                if response.status_code in (401, 403, 404):
                    raise error_from_response(response)
                response.raise_for_status()
            lines: list[str] = []
            try:
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line == "":
                        for event_id, kind, _data in _parse_sse(iter(lines)):
                            yield event_id, kind or "message"
                        lines = []
            except httpx.ReadTimeout:
                return

    async def losses(self) -> list[dict[str, Any]]:
        return await self._json("GET", "/losses")

    async def datasets(self) -> list[dict[str, Any]]:
        return await self._json("GET", "/datasets")

    async def models(self) -> list[dict[str, Any]]:
        return await self._json("GET", "/models")

    async def health(self) -> dict[str, Any]:
        return await self._json("GET", "/healthz")

    async def ready(self) -> dict[str, Any]:
        try:
            response = await self._http.get("/readyz")
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from None
        if response.status_code in (200, 503):
            return response.json()
        raise error_from_response(response)
