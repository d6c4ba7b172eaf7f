"""``/internal/jobs/{id}/events``: where a job's driver delivers its events, authenticated by the job's secret.

The secret travels in the ``X-Longtail-Driver-Secret`` header; it is compared in constant time with the hash
stored when the job was dispatched, before the body is read (``service.middleware.AuthMiddleware``). Missing ->
401, wrong -> 403, and 403 once the job is final: a finished job's results cannot be changed. Events are
idempotent by ``seq`` and validated against the model of their type (``service.schemas.DriverEvent``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from service.deps import MetricsDep, ServiceDep
from service.schemas import ErrorResponse, EventBatch, IngestResult
from service.store import JobRecord

router = APIRouter(prefix="/internal", tags=["internal"])


def driver_job(
    request: Request,
    job_id: str,
    service: ServiceDep,
    x_longtail_driver_secret: Annotated[str | None, Header(max_length=512)] = None,
) -> JobRecord:
    """The job whose secret the caller holds (``AuthMiddleware`` checked it before the body was read)."""
    job = getattr(request.state, "driver_job", None)
    if job is None or job.id != job_id:
        job = service.check_driver_secret(job_id, x_longtail_driver_secret)
    return job


@router.post(
    "/jobs/{job_id}/events",
    response_model=IngestResult,
    responses={
        401: {"model": ErrorResponse, "description": "No driver secret"},
        403: {"model": ErrorResponse, "description": "A wrong secret, or the job is final (its secret expired)"},
        404: {"model": ErrorResponse, "description": "Not an internal route"},
        413: {"model": ErrorResponse, "description": "Body too large"},
        422: {"model": ErrorResponse, "description": "An event that does not match its type's model"},
    },
)
def ingest_events(
    job: Annotated[JobRecord, Depends(driver_job)],
    batch: EventBatch,
    service: ServiceDep,
    metrics: MetricsDep,
) -> IngestResult:
    """Store a batch of driver events (duplicates by ``seq`` are ignored; any order is fine)."""
    accepted, duplicates = service.ingest(job.id, [e.model_dump(exclude_unset=True) for e in batch.events])
    metrics.count_events(accepted)
    return IngestResult(accepted=accepted, duplicates=duplicates)
