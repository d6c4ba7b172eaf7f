"""Python client of the longtail service: ``Client`` (blocking) and ``AsyncClient`` (asyncio), same methods.

    >>> from service.client import Client
    >>> with Client("http://127.0.0.1:8000") as lt:               # token=... when the service has API tokens
    ...     job = lt.submit("examples/digits-demo.yaml")           # a JobSpec, a dict, or a YAML/JSON file
    ...     job = lt.wait(job.id, on_progress=lambda j: print(j.progress.trials_done))
    ...     print(lt.results(job.id).to_dataframe())                # needs pandas

Transient failures (connection refused while the service restarts, 502/503/504, a dropped connection on a safe
request) are retried with exponential backoff, ``retries`` times. ``submit`` always sends an ``Idempotency-Key``
(a random one unless given), so a retried submission never creates a second job. ``wait`` follows the job's
server-sent events (``/jobs/{id}/events``, read with httpx-sse) and falls back to polling when the stream is
unavailable. Both clients are one implementation (``_async_client.py``, from which ``_sync_client.py`` is generated)
with one retry policy (tenacity, ``_client_core.retry_policy``).

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

from service._async_client import AsyncClient
from service._client_core import (
    DEFAULT_URL,
    Conflict,
    Forbidden,
    Job,
    LongtailError,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Results,
    ServiceUnavailable,
    SpecFileError,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
    error_from_response,
    load_spec,
    retry_policy,
    spec_payload,
)
from service._sync_client import Client
from service.schemas import Progress
from service.status import JobStatus

__all__ = [
    "DEFAULT_URL",
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
    "error_from_response",
    "load_spec",
    "retry_policy",
    "spec_payload",
]
