"""``/jobs``: submit, list, read, results, events (SSE), logs, plots, cancel."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse

from service.deps import JobDep, OwnerDep, ServiceDep, SettingsDep, StoreDep
from service.errors import NotFound, NothingToPlot, SpecRejected
from service.results import partial_result
from service.schemas import ErrorResponse, JobList, JobRead, JobResults
from service.store import JobRecord, JobStatus, JobStore

router = APIRouter(prefix="/jobs", tags=["jobs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid bearer token"},
    404: {"model": ErrorResponse, "description": "No such job (or another owner's)"},
}


def job_read(job: JobRecord, store: JobStore) -> JobRead:
    base = f"/jobs/{job.id}"
    return JobRead(
        id=job.id,
        name=job.name,
        owner=job.owner,
        status=job.status,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        progress=store.progress(job),
        spec=job.spec,
        links={
            "self": base,
            "results": f"{base}/results",
            "events": f"{base}/events",
            "logs": f"{base}/logs",
            "cancel": f"{base}/cancel",
        },
        resumes=job.resumes,
        resume_history=list(job.resume_history),
    )


@router.post(
    "",
    status_code=201,
    response_model=JobRead,
    responses={
        **_ERRORS,
        409: {"model": ErrorResponse, "description": "Idempotency-Key reused with a different body"},
        413: {"model": ErrorResponse, "description": "Body too large"},
        422: {"model": ErrorResponse, "description": "Invalid spec (details name each field path)"},
        429: {"model": ErrorResponse, "description": "Too many queued or running jobs for this owner"},
    },
)
def create_job(
    body: Annotated[dict[str, Any], Body(description="A JobSpec")],
    response: Response,
    service: ServiceDep,
    owner: OwnerDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobRead:
    """Queue a job. With an ``Idempotency-Key``, a retried request returns the job the first one created."""
    job, created = service.create(owner, body, idempotency_key)
    response.headers["Location"] = f"/jobs/{job.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return job_read(job, service.store)


@router.get("", response_model=JobList, responses=_ERRORS)
def list_jobs(
    store: StoreDep,
    owner: OwnerDep,
    status: Annotated[list[JobStatus] | None, Query(description="Only jobs with these statuses")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobList:
    """The caller's jobs, newest first."""
    try:
        jobs, next_cursor = store.list_jobs(owner=owner, statuses=status or (), limit=limit, cursor=cursor)
    except ValueError as exc:
        raise SpecRejected("invalid query", [{"loc": "cursor", "msg": str(exc), "type": "value_error"}]) from None
    return JobList(items=[job_read(j, store) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobRead, responses=_ERRORS)
def get_job(job: JobDep, store: StoreDep) -> JobRead:
    """Status, timestamps, progress (trials done / running / total, epochs, best so far) and the error if any."""
    return job_read(job, store)


@router.get(
    "/{job_id}/results",
    response_model=JobResults,
    responses=_ERRORS,
)
async def get_results(job_id: str, service: ServiceDep, owner: OwnerDep) -> Response:
    """Every trial with its history, final, best and per-class metrics; best trial; gains over the control.

    Partial (built from the events so far, ``complete: false``) until the job has its final result.
    """
    cached = service.results_cache.get(job_id, owner)
    if cached is None:
        cached = await run_in_threadpool(_results_body, service, job_id, owner)
    return Response(cached, media_type="application/json")


def _results_body(service: Any, job_id: str, owner: str) -> bytes:
    store = service.store
    job = store.get_job(job_id, owner=owner)
    stored = store.result_json(job.id) if job.status.terminal else None
    if stored:
        # Served as stored (no re-parsing): the JobResult object with the job's id and status in front.
        head = json.dumps({"job_id": job.id, "status": str(job.status), "complete": True})[:-1]
        body = (head + ("," + stored.lstrip()[1:] if stored.strip() != "{}" else "}")).encode()
        service.results_cache.put(job.id, owner, body)  # a finished job's result does not change
        return body
    payload = {"job_id": job.id, "status": str(job.status), "complete": False, **partial_result(store, job)}
    return json.dumps(payload, allow_nan=False, default=str).encode()


@router.get(
    "/{job_id}/events",
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}},
    response_class=StreamingResponse,
)
async def job_events(
    job: JobDep,
    service: ServiceDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
    after: Annotated[int | None, Query(ge=0, description="Replay events after this id (like Last-Event-ID)")] = None,
) -> StreamingResponse:
    """Status changes and driver events as server-sent events: stored ones after ``Last-Event-ID``, then live.

    Each message has ``id`` (for resuming), ``event`` (the type) and ``data`` (the event's JSON). A comment line
    is sent as a heartbeat; the stream ends once the job is finished and everything was sent.
    """
    try:
        start = int(last_event_id) if last_event_id else (after or 0)
    except ValueError:
        start = after or 0
    return StreamingResponse(
        _event_stream(service, job.id, start, settings.sse_poll_s, settings.sse_heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(service: Any, job_id: str, last: int, poll_s: float, heartbeat_s: float) -> AsyncIterator[str]:
    store = service.store
    waiter = service.notifier.waiter()
    last_sent = time.monotonic()
    try:
        yield "retry: 2000\n\n"
        while True:
            waiter.clear()
            rows = await asyncio.to_thread(store.events_after, job_id, last)
            for event_id, kind, payload in rows:
                yield f"id: {event_id}\nevent: {kind}\ndata: {payload}\n\n"
                last = event_id
            if rows:
                last_sent = time.monotonic()
                continue
            job = await asyncio.to_thread(store.get_job, job_id)
            if job.status.terminal:
                # The terminal status may have committed (with its last events) after the read above: read again.
                if not await asyncio.to_thread(store.events_after, job_id, last, 1):
                    return
                continue
            if time.monotonic() - last_sent >= heartbeat_s:
                yield ": heartbeat\n\n"
                last_sent = time.monotonic()
            try:
                await asyncio.wait_for(waiter.wait(), timeout=min(poll_s, heartbeat_s))
            except asyncio.TimeoutError:
                pass
    finally:
        service.notifier.discard(waiter)


@router.get(
    "/{job_id}/logs",
    response_class=PlainTextResponse,
    responses={**_ERRORS, 200: {"content": {"text/plain": {}}, "description": "The driver's log tail"}},
)
async def job_logs(
    job: JobDep, service: ServiceDep, tail: Annotated[int, Query(ge=1, le=10_000)] = 200
) -> PlainTextResponse:
    """The last ``tail`` lines of the job's Ray driver log (empty while queued)."""
    return PlainTextResponse(await service.logs(job, tail))


@router.post(
    "/{job_id}/cancel",
    response_model=JobRead,
    responses={**_ERRORS, 409: {"model": ErrorResponse, "description": "The job already finished"}},
)
async def cancel_job(job: JobDep, service: ServiceDep) -> JobRead:
    """Stop the job's Ray work (its resources are freed) and mark it cancelled; 409 once it finished."""
    updated = await service.cancel(job)
    return await asyncio.to_thread(job_read, updated, service.store)


@router.get(
    "/{job_id}/plots/{filename}",
    responses={
        **_ERRORS,
        200: {"content": {"image/png": {}, "image/svg+xml": {}}, "description": "The figure"},
        409: {"model": ErrorResponse, "description": "No trial has reported an epoch yet"},
    },
    response_class=Response,
)
def job_plot(
    job: JobDep,
    store: StoreDep,
    filename: str,
    format: Annotated[str | None, Query(pattern="^(png|svg)$")] = None,  # noqa: A002 - the query name
) -> Response:
    """A figure of the results: ``{kind}.png`` or ``{kind}.svg`` (or ``?format=svg``); kinds as in ``/plots``."""
    from service import plots  # matplotlib: imported on the first plot, not at start-up

    kind, dot, ext = filename.rpartition(".")
    if not dot:
        kind, ext = filename, "png"
    if ext not in ("png", "svg"):
        raise NotFound(f"unknown plot format {ext!r}; use .png or .svg")
    fmt = format or ext
    if kind not in plots.PLOT_KINDS:
        raise NotFound(f"unknown plot kind {kind!r}", {"kinds": list(plots.PLOT_KINDS)})
    stored = store.result_json(job.id) if job.status.terminal else None
    key = (job.id, kind, fmt, hash(stored)) if stored else None
    data = _finished_plots.get(key) if key else None
    if data is None:
        result = json.loads(stored) if stored else partial_result(store, job)
        try:
            data = plots.render_plot(kind, result, fmt=fmt)
        except plots.NoFinishedTrials as exc:
            raise NothingToPlot(str(exc) or "no trial has reported an epoch yet") from None
        if key:  # a finished job's figures cannot change (a late result changes the key): render them once
            _finished_plots.put(key, data)
    media = "image/svg+xml" if fmt == "svg" else "image/png"
    return Response(data, media_type=media, headers={"Cache-Control": "no-cache"})


class _LRU:
    """A small thread-safe LRU of rendered figures (rendering takes ~0.1-0.2 s; a figure is ~50-150 KB)."""

    def __init__(self, size: int) -> None:
        self.size, self._items, self._lock = size, OrderedDict[Any, bytes](), threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: Any, value: bytes) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_finished_plots = _LRU(128)

__all__ = ["router", "job_read"]
