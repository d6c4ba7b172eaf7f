"""``/jobs``: submit, list, read, results, events (SSE), logs, plots, cancel, delete, model download, predict."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from cachetools import LRUCache, cached
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import ValidationError

from service.deps import JobDep, OwnerDep, ServiceDep, SettingsDep, StoreDep
from service.errors import InvalidJSON, InvalidParameter, NotFound, NothingToPlot, PayloadTooLarge, PlotsUnavailable
from service.results import partial_result
from service.schemas import (
    DeleteResponse,
    ErrorResponse,
    JobList,
    JobRead,
    JobResults,
    Prediction,
    PredictRequest,
    PredictResponse,
    TopClass,
)
from service.store import JobRecord, JobStatus, JobStore

router = APIRouter(prefix="/jobs", tags=["jobs"])

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid bearer token"},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **_AUTH,
    404: {"model": ErrorResponse, "description": "No such job (or another owner's)"},
}
# For routes whose success is not JSON: FastAPI would document a ``model`` under the route's media type.
_ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": value["description"], "content": _ERROR_JSON} for code, value in _ERRORS.items()
}
MAX_EVENT_ID = 2**62


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
            "model": f"{base}/model",
            "predict": f"{base}/predict",
        },
        resumes=job.resumes,
        resume_history=list(job.resume_history),
    )


@router.post(
    "",
    status_code=201,
    response_model=JobRead,
    responses={
        **_AUTH,
        409: {"model": ErrorResponse, "description": "Idempotency-Key reused with a different body"},
        413: {"model": ErrorResponse, "description": "Body too large"},
        422: {
            "model": ErrorResponse,
            "description": "Not strict JSON (code validation_error; NaN and Infinity are refused) or an invalid spec "
            "(code invalid_spec; details name each field path)",
        },
        429: {"model": ErrorResponse, "description": "Too many queued or running jobs for this owner"},
    },
)
async def create_job(
    request: Request,
    response: Response,
    service: ServiceDep,
    owner: OwnerDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobRead:
    """Queue a job (the body is a JobSpec). With an ``Idempotency-Key``, a retried request returns the job the first
    one created."""
    body = parse_strict_json(await request.body())  # after AuthMiddleware, bounded by BodyLimitMiddleware
    if not isinstance(body, dict):
        msg = "the body must be a JSON object (a JobSpec)"
        raise InvalidJSON(msg, [{"loc": "body", "msg": msg, "type": "dict_type"}])
    job, created = await run_in_threadpool(service.create, owner, body, idempotency_key)
    response.headers["Location"] = f"/jobs/{job.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return await run_in_threadpool(job_read, job, service.store)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} does not fit a 64-bit float")
    return value


def parse_strict_json(raw: bytes) -> Any:
    """Strict JSON: ``NaN``/``Infinity``, numbers that overflow a float (``1e999``) and non-UTF-8 bytes are a 422."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        msg = f"the body is not strict JSON: {str(exc)[:200]}"
        raise InvalidJSON(msg, [{"loc": "body", "msg": msg, "type": "json_invalid"}]) from None


def sign_cursor(key: bytes, owner: str, cursor: str) -> str:
    """An opaque page cursor bound to its owner: the store's cursor plus an HMAC."""
    mac = hmac.new(key, f"{owner}\n{cursor}".encode(), hashlib.sha256).hexdigest()[:24]
    return f"{cursor}.{mac}"


def verify_cursor(key: bytes, owner: str, signed: str) -> str:
    cursor, dot, _ = signed.rpartition(".")
    if not dot or not hmac.compare_digest(sign_cursor(key, owner, cursor).encode(), signed.encode()):
        raise InvalidParameter(
            "invalid cursor: pass the next_cursor of a previous page", [{"loc": "cursor", "msg": "invalid cursor"}]
        )
    return cursor


@router.get(
    "",
    response_model=JobList,
    responses={**_AUTH, 422: {"model": ErrorResponse, "description": "An invalid query parameter or cursor"}},
)
def list_jobs(
    store: StoreDep,
    service: ServiceDep,
    owner: OwnerDep,
    status: Annotated[list[JobStatus] | None, Query(description="Only jobs with these statuses")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobList:
    """The caller's jobs, newest first."""
    key = service.cursor_key
    raw = verify_cursor(key, owner, cursor) if cursor is not None else None
    try:
        jobs, next_cursor = store.list_jobs(owner=owner, statuses=status or (), limit=limit, cursor=raw)
    except ValueError as exc:
        raise InvalidParameter("invalid cursor", [{"loc": "cursor", "msg": str(exc)}]) from None
    return JobList(
        items=[job_read(j, store) for j in jobs],
        next_cursor=sign_cursor(key, owner, next_cursor) if next_cursor else None,
    )


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
    responses={
        **_JSON_ERRORS,
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"},
        422: {"description": "An invalid after or Last-Event-ID", "content": _ERROR_JSON},
    },
    response_class=StreamingResponse,
)
async def job_events(
    job: JobDep,
    service: ServiceDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    after: Annotated[
        str | None, Query(max_length=64, description="Replay events after this event id (like Last-Event-ID)")
    ] = None,
) -> StreamingResponse:
    """Status changes and driver events as server-sent events: stored ones after ``Last-Event-ID``, then live.

    Each message has ``id`` (opaque, for resuming: ``Last-Event-ID`` or ``?after=``), ``event`` (the type) and
    ``data`` (the event's JSON). A comment line is sent as a heartbeat; the stream ends once the job is finished and
    everything was sent.
    """
    start = 0
    for loc, value in (("after", after), ("Last-Event-ID", last_event_id)):  # the header wins, as in EventSource
        if value:
            start = verify_event_id(service.cursor_key, job.id, value.strip(), loc)
    return StreamingResponse(
        _event_stream(service, job.id, start, settings.sse_poll_s, settings.sse_heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def sign_event_id(key: bytes, job_id: str, event_id: int) -> str:
    """An SSE id: the stored event's number and an HMAC binding it to its job (opaque to clients)."""
    mac = hmac.new(key, f"event\n{job_id}\n{event_id}".encode(), hashlib.sha256).hexdigest()[:16]
    return f"{event_id}.{mac}"


def verify_event_id(key: bytes, job_id: str, value: str, loc: str) -> int:
    num, dot, _ = value.partition(".")
    if dot and num.isascii() and num.isdigit() and len(num) <= 19 and int(num) <= MAX_EVENT_ID:
        if hmac.compare_digest(sign_event_id(key, job_id, int(num)).encode(), value.encode()):
            return int(num)
    raise InvalidParameter(f"invalid {loc}", [{"loc": loc, "msg": "pass the id of an event this stream sent"}])


async def _event_stream(service: Any, job_id: str, last: int, poll_s: float, heartbeat_s: float) -> AsyncIterator[str]:
    store = service.store
    key = service.cursor_key
    waiter = service.notifier.waiter()
    last_sent = time.monotonic()
    try:
        yield "retry: 2000\n\n"
        while True:
            waiter.clear()
            rows = await asyncio.to_thread(store.events_after, job_id, last)
            for event_id, kind, payload in rows:
                yield f"id: {sign_event_id(key, job_id, event_id)}\nevent: {kind}\ndata: {payload}\n\n"
                last = event_id
            if rows:
                last_sent = time.monotonic()
                continue
            job = await asyncio.to_thread(store.get_job, job_id)
            if job.status.terminal:
                # The final events may have been stored between the read above and this one: send them first.
                if await asyncio.to_thread(store.events_after, job_id, last, 1):
                    continue
                return
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
    responses={
        **_JSON_ERRORS,
        200: {"content": {"text/plain": {}}, "description": "The driver's log tail (server paths made relative)"},
    },
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


@router.delete(
    "/{job_id}",
    response_model=DeleteResponse,
    responses={
        **_ERRORS,
        409: {"model": ErrorResponse, "description": "The job is queued or running: cancel it first"},
    },
)
async def delete_job(job: JobDep, service: ServiceDep) -> DeleteResponse:
    """Delete a finished job: its rows (trials, epochs, events) and its files under the storage path (checkpoints)."""
    removed = await run_in_threadpool(service.delete_job, job)
    return DeleteResponse(job_id=job.id, deleted=True, removed=removed)


_MODEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_JSON_ERRORS,
    200: {
        "content": {"application/octet-stream": {}, "application/zip": {}},
        "description": "format=checkpoint: a model file (torch.save of the weights and the JSON manifest; "
        "lt_core.load_model reads it). format=exported: a zip of model.pt2 (torch.export) and manifest.json.",
    },
    409: {
        "description": "No finished trial (or this one is not finished), or its checkpoint is gone",
        "content": _ERROR_JSON,
    },
    422: {"description": "An invalid format", "content": _ERROR_JSON},
}
ModelFormat = Annotated[str, Query(pattern="^(checkpoint|exported)$", description="checkpoint (default) or exported")]


def _model_response(service: Any, job: JobRecord, trial_id: str | None, fmt: str) -> Response:
    from jobs.model_out import exported_zip_bytes, model_file_bytes

    state, manifest = service.model_checkpoint(job, trial_id)
    stem = f"{job.id}-{manifest['trial_id']}-epoch{manifest['epoch']}"
    if fmt == "exported":
        body, media, name = exported_zip_bytes(state, manifest), "application/zip", f"{stem}.zip"
    else:
        body, media, name = model_file_bytes(state, manifest), "application/octet-stream", f"{stem}.pt"
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Longtail-Trial": str(manifest["trial_id"]),
        "X-Longtail-Epoch": str(manifest["epoch"]),
    }
    return Response(body, media_type=media, headers=headers)


@router.get("/{job_id}/model", responses=_MODEL_RESPONSES, response_class=Response)
async def job_model(job: JobDep, service: ServiceDep, format: ModelFormat = "checkpoint") -> Response:  # noqa: A002
    """The job's best finished trial at its selected epoch, with its manifest (classes, counts, input, post-hoc)."""
    return await run_in_threadpool(_model_response, service, job, None, format)


@router.get("/{job_id}/trials/{trial_id}/model", responses=_MODEL_RESPONSES, response_class=Response)
async def trial_model(
    job: JobDep,
    service: ServiceDep,
    trial_id: Annotated[str, Path(max_length=128)],
    format: ModelFormat = "checkpoint",  # noqa: A002
) -> Response:
    """A finished trial's model at its selected epoch (see ``/jobs/{job_id}/model``)."""
    return await run_in_threadpool(_model_response, service, job, trial_id, format)


@router.post(
    "/{job_id}/predict",
    response_model=PredictResponse,
    responses={
        **_ERRORS,
        409: {"model": ErrorResponse, "description": "No finished trial yet"},
        413: {"model": ErrorResponse, "description": "More rows than the service's limit, or a too large body"},
        422: {"model": ErrorResponse, "description": "Rows of the wrong shape (the message names the expected one)"},
    },
)
async def predict(request: Request, job: JobDep, service: ServiceDep, settings: SettingsDep) -> PredictResponse:
    """Top-k classes with probabilities per row (or image), from the job's model (post-hoc adjusted as ``posthoc``
    says). The body is a ``PredictRequest``."""
    raw = parse_strict_json(await request.body())  # strict JSON (422, never a parse 400); bounded by the middleware
    try:
        body = PredictRequest.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        raise RequestValidationError(errors) from None
    n = len(body.rows or body.images or [])
    if n > settings.max_predict_rows:
        raise PayloadTooLarge(
            f"{n} {'rows' if body.rows is not None else 'images'} exceed the limit of {settings.max_predict_rows} "
            "per request",
            {"limit": settings.max_predict_rows},
        )
    return await run_in_threadpool(_predict, service, job, body)


def _predict(service: Any, job: JobRecord, body: PredictRequest) -> PredictResponse:
    import torch

    from lt_core.inference import InputError, model_from_manifest, predict_logits

    state, manifest = service.model_checkpoint(job, body.trial_id)
    model = model_from_manifest(manifest)
    model.load_state_dict(state["model"])
    posthoc: Any = body.posthoc if isinstance(body.posthoc, str) else {"tau": float(body.posthoc)}
    inputs: Any = body.rows
    if body.images is not None:
        if manifest["input"]["preprocessing"].get("kind") != "image":
            raise InvalidParameter(
                f"this model takes rows of shape {manifest['input']['shape']}, not images",
                {"expected_shape": manifest["input"]["shape"]},
            )
        try:
            inputs = [base64.b64decode(text, validate=True) for text in body.images]
        except (binascii.Error, ValueError):
            raise InvalidParameter("images must be base64-encoded image files") from None
    try:
        probs = predict_logits(model, manifest, inputs, posthoc=posthoc).softmax(dim=1)
    except InputError as exc:
        raise InvalidParameter(str(exc), {"expected_shape": manifest["input"]["shape"]}) from None
    k = min(body.top_k, probs.shape[1])
    values, indices = torch.topk(probs, k, dim=1)
    names = manifest["class_names"]
    predictions = [
        Prediction(top=[TopClass(index=i, name=str(names[i]), probability=p) for p, i in zip(ps, ix, strict=True)])
        for ps, ix in zip(values.tolist(), indices.tolist(), strict=True)
    ]
    if posthoc == "auto":
        used = {"method": manifest["posthoc"]["method"], "tau": manifest["posthoc"]["tau"]}
    elif posthoc == "none":
        used = {"method": "none", "tau": 0.0}
    else:
        used = {"method": "logit_adjustment", "tau": posthoc["tau"]}
    return PredictResponse(
        job_id=job.id, trial_id=manifest["trial_id"], epoch=manifest["epoch"], posthoc=used, predictions=predictions
    )


@router.get(
    "/{job_id}/plots/{filename}",
    responses={
        **_JSON_ERRORS,
        200: {"content": {"image/png": {}, "image/svg+xml": {}}, "description": "The figure"},
        409: {"description": "No trial has reported an epoch yet", "content": _ERROR_JSON},
        422: {"description": "An invalid format", "content": _ERROR_JSON},
        501: {"description": "The service has no plots extra (matplotlib)", "content": _ERROR_JSON},
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
    try:
        from service import plots  # matplotlib: imported on the first plot, not at start-up
    except ImportError:
        raise PlotsUnavailable(
            "this service was installed without figures: pip install 'longtail-service[plots]' and restart it"
        ) from None

    kind, dot, ext = filename.rpartition(".")
    if not dot:
        kind, ext = filename, "png"
    if ext not in ("png", "svg"):
        raise NotFound(f"unknown plot format {ext!r}; use .png or .svg")
    fmt: Literal["png", "svg"] = "svg" if (format or ext) == "svg" else "png"
    if kind not in plots.PLOT_KINDS:
        raise NotFound(f"unknown plot kind {kind!r}", {"kinds": list(plots.PLOT_KINDS)})
    stored = store.result_json(job.id) if job.status.terminal else None
    try:
        if stored:
            data = _finished_plot(job.id, kind, fmt, stored)
        else:
            data = plots.render_plot(kind, partial_result(store, job), fmt=fmt)
    except plots.NoFinishedTrials as exc:
        raise NothingToPlot(str(exc) or "no trial has reported an epoch yet") from None
    media = "image/svg+xml" if fmt == "svg" else "image/png"
    return Response(data, media_type=media, headers={"Cache-Control": "no-cache"})


@cached(
    LRUCache(maxsize=128),
    key=lambda job_id, kind, fmt, stored: (job_id, kind, fmt, hash(stored)),
    lock=threading.Lock(),
)
def _finished_plot(job_id: str, kind: str, fmt: Literal["png", "svg"], stored: str) -> bytes:
    """A finished job's figure, rendered once: it cannot change (a late result is another ``stored``, a new key).

    Rendering takes ~0.1-0.2 s; a figure is ~50-150 KB, and the 128 most recently used are kept.
    """
    from service import plots

    return plots.render_plot(kind, json.loads(stored), fmt=fmt)


__all__ = ["router", "job_read"]
