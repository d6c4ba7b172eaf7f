"""``/healthz`` (process up, no auth), ``/readyz`` (store and Ray reachable), ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from service.deps import MetricsDep, OwnerDep, ServiceDep, SettingsDep
from service.metrics import CONTENT_TYPE
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(settings: SettingsDep) -> Health:
    """The process is up (no authentication); says whether the API needs a token."""
    return Health(status="ok", auth=settings.auth_enabled)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(service: ServiceDep, owner: OwnerDep) -> JSONResponse:
    """The store answers and Ray is reachable."""
    try:
        await asyncio.to_thread(service.store.ping)
        store = "ok"
    except Exception as exc:  # any database error means "not ready"
        store = f"error: {type(exc).__name__}"
    ray_problem = await service.dispatcher.ready()
    ray = "ok" if ray_problem is None else ray_problem
    ok = store == "ok" and ray_problem is None
    body = Readiness(status="ready" if ok else "unready", store=store, ray=ray)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(service: ServiceDep, metrics: MetricsDep, owner: OwnerDep) -> PlainTextResponse:
    """Prometheus text format: jobs by status, trials running, request latency."""
    text = metrics.render(service.store.counts_by_status(), service.store.trials_running())
    return PlainTextResponse(text, media_type=CONTENT_TYPE)
