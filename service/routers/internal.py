"""``/internal/jobs/{id}/events``: where a job's driver delivers its events, authenticated by the job's secret.

The secret travels in the ``X-Longtail-Driver-Secret`` header; it is compared in constant time with the hash
stored when the job was dispatched. Missing -> 401, wrong -> 403. Events are idempotent by ``seq``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header

from service.deps import MetricsDep, ServiceDep
from service.schemas import ErrorResponse, EventBatch, IngestResult
from service.store import JobRecord

router = APIRouter(prefix="/internal", tags=["internal"])


def driver_job(
    job_id: str,
    service: ServiceDep,
    x_longtail_driver_secret: Annotated[str | None, Header(max_length=512)] = None,
) -> JobRecord:
    """The job whose secret the caller holds (checked before the body is even parsed)."""
    return service.check_driver_secret(job_id, x_longtail_driver_secret)


@router.post(
    "/jobs/{job_id}/events",
    response_model=IngestResult,
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)
def ingest_events(
    job: Annotated[JobRecord, Depends(driver_job)],
    batch: EventBatch,
    service: ServiceDep,
    metrics: MetricsDep,
) -> IngestResult:
    """Store a batch of driver events (duplicates by ``seq`` are ignored; any order is fine)."""
    accepted, duplicates = service.ingest(job.id, [e.model_dump() for e in batch.events])
    metrics.count_events(accepted)
    return IngestResult(accepted=accepted, duplicates=duplicates)
