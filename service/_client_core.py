"""What the sync and async clients share: errors, models, spec files, the retry policy and the wait's clock.

``service/_async_client.py`` is the one implementation of the requests; ``service/_sync_client.py`` is generated
from it (``scripts/gen_sync_client.py``). Everything here is plain Python, the same for both.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import ConfigDict, PrivateAttr, ValidationError
from tenacity import RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential

from jobs.results import PosthocSummary, TrialResult
from jobs.spec import JobSpec
from service.schemas import JobRead, JobResults
from service.status import JobStatus

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

    status_code: int | None = 422

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

    def trial(self, trial_id: str | None) -> TrialResult | None:
        return next((t for t in self.trials if t.get("trial_id") == trial_id), None)

    @property
    def control(self) -> TrialResult | None:
        """The cross-entropy control trial, if the job has one."""
        return self.trial(self.control_trial_id)

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per loss branch (and the control first): the comparison table's content."""
        rows = []
        control = self.control
        if control is not None and control.get("best"):
            summary = self.control_summary
            if summary is not None and summary.best_metrics is not None:
                # The control's figures are its mean over seeds, as the branches' are: the result's control_summary.
                row = _row("control", control, self.metric, gain=0.0, is_control=True, metrics=summary.best_metrics)
                row.update(
                    best_value=summary.test_mean,
                    test_std=summary.test_std,
                    n_seeds=summary.n_seeds,
                    config_id=summary.config_id or row["config_id"],
                )
            else:
                row = _row("control", control, self.metric, gain=0.0, is_control=True)
                # Fallback for a result stored by an older driver, without control_summary: the mean over the
                # control trials' selected epochs, computed here.
                seeds = [t for t in self.trials if t.get("is_control") and t.get("best")]
                if len(seeds) > 1:
                    for key in ("balanced_accuracy", "accuracy", *SHOT_KEYS):
                        values = [t["best"]["metrics"].get(key) for t in seeds]
                        if all(isinstance(v, (int, float)) for v in values):
                            row[key] = sum(values) / len(values)
                row.update(n_seeds=len(seeds))
            row.update(config=_without_identity(row["config"]))
            rows.append(row)
            posthoc = self.control_posthoc
            if posthoc:  # "CE + post-hoc LA": the control's own logit adjustment, tau chosen on validation
                rows.append(_posthoc_row(posthoc, control, self.metric))
        for b in self.branches:
            trial: TrialResult | dict[str, Any] = self.trial(b.get("best_trial_id")) or {}
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


def _posthoc_row(posthoc: PosthocSummary, control: TrialResult | dict[str, Any], metric: str) -> dict[str, Any]:
    """The table row of the control with post-hoc logit adjustment; its gain is over the raw control."""
    metrics = posthoc.metrics
    ci = posthoc.gain_ci95
    if "significant" in posthoc.model_fields_set:
        significant = posthoc.significant
    else:  # fallback for a result stored by an older driver, without it: the branches' rule, applied here
        significant = bool(ci and (ci[0] > 0 or ci[1] < 0))
    row = _row(POSTHOC_LA_BRANCH, control, metric, gain=posthoc.gain, metrics=metrics)
    row.update(
        best_value=posthoc.test_mean,
        n_seeds=posthoc.n_seeds,
        test_std=posthoc.test_std,
        gain_std=posthoc.gain_std,
        gain_ci95_lo=ci[0] if ci else None,
        gain_ci95_hi=ci[1] if ci else None,
        significant=significant,
        config={**_without_identity(row["config"]), "posthoc": "logit_adjustment", "tau": posthoc.tau},
        is_posthoc=True,
    )
    if metric not in metrics and posthoc.test_mean is not None:
        row[metric] = posthoc.test_mean
    return row


def _without_identity(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's config without what tells its repeats apart (the seed, the config id): the config of all of them."""
    return {k: v for k, v in config.items() if k not in ("seed", "train.seed", "config_id")}


def _row(
    branch: Any,
    trial: TrialResult | dict[str, Any],
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
        from service.spec_errors import validation_details

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
# Shared plumbing: headers, the mapping of failures, the retry policy, the wait's clock
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


class Transient(Exception):
    """A failure worth retrying (a refused connection, 502/503/504); ``error`` is raised once the retries are spent."""

    def __init__(self, reason: str, error: LongtailError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def transport_failure(base_url: str, exc: httpx.TransportError, method: str, idempotent: bool) -> Exception:
    """What a request that never got an answer raises: ``Transient`` when it is safe to send again."""
    error = _unreachable(base_url, exc)
    if _retryable_exception(exc, method, idempotent):
        return Transient(f"{exc.__class__.__name__}: {exc}", error)
    return error


def checked(response: httpx.Response) -> httpx.Response:
    """The response when it succeeded; else raise its typed error (``Transient`` around it for 502/503/504)."""
    if response.status_code < 400:
        return response
    error = error_from_response(response)
    if response.status_code in RETRY_STATUS:
        raise Transient(f"HTTP {response.status_code}", error)
    raise error


def check_stream(response: httpx.Response) -> None:
    """An event stream that could not be opened: 401/403/404 are the caller's errors, anything else means poll."""
    if response.status_code >= 400:
        if response.status_code in (401, 403, 404):
            raise error_from_response(response)
        response.raise_for_status()


def retry_policy(
    retries: int, backoff: float, max_backoff: float, on_retry: Callable[[int, str, float], Any] | None
) -> dict[str, Any]:
    """The clients' one retry policy (tenacity's ``Retrying`` / ``AsyncRetrying`` arguments).

    ``retries`` attempts after the first, for ``Transient`` failures only, waiting ``backoff * 2**n`` seconds (capped
    at ``max_backoff``); ``on_retry(attempt, reason, delay_s)`` is called before each wait. The last failure is
    re-raised (the caller turns a spent ``Transient`` into its error).
    """

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            exc = state.outcome.exception()
            on_retry(state.attempt_number, getattr(exc, "reason", str(exc)), state.next_action.sleep)

    return {
        "stop": stop_after_attempt(retries + 1),
        "wait": wait_exponential(multiplier=backoff, max=max_backoff),
        "retry": retry_if_exception_type(Transient),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def sse_timeout(timeout: float, remaining: float | None) -> httpx.Timeout:
    """The event stream's timeouts: reads wait up to 60 s (a quiet stream), never past the wait's deadline."""
    read = 60.0 if remaining is None else max(0.1, min(60.0, remaining))
    return httpx.Timeout(timeout, read=read)


class Deadline:
    """The wait's clock: ``remaining()`` seconds (None: no deadline), and how long to pause between polls."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def pause(self, interval: float) -> float:
        remaining = self.remaining()
        return interval if remaining is None else max(0.0, min(interval, remaining))


def report(on_progress: Callable[[Job], Any] | None, job: Job) -> None:
    if on_progress is not None:
        on_progress(job)


async def areport(on_progress: Callable[[Job], Any] | None, job: Job) -> None:
    """``report`` for the async client: ``on_progress`` may be a coroutine function."""
    if on_progress is not None:
        outcome = on_progress(job)
        if inspect.isawaitable(outcome):
            await outcome


sleep = time.sleep


async def asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


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

    @property
    def _retry(self) -> dict[str, Any]:
        return retry_policy(self.retries, self.backoff, self.max_backoff, self.on_retry)

    @staticmethod
    def _statuses(status: Any) -> list[str] | None:
        if status is None:
            return None
        if isinstance(status, (str, JobStatus)):
            status = [status]
        return [str(JobStatus(str(s))) for s in status]
