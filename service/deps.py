"""FastAPI dependencies: the service objects and the caller's identity.

The ones that do no I/O are ``async``: FastAPI would run a plain ``def`` dependency in the thread pool, one thread
hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.core import JobService
from service.metrics import Metrics
from service.middleware import bearer_owner
from service.settings import Settings
from service.store import JobRecord, JobStore

LOCAL_OWNER = "local"


async def get_service(request: Request) -> JobService:
    return request.app.state.service


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> JobStore:
    return request.app.state.service.store


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_owner(request: Request) -> str:
    """The owner of the bearer token (401 without a valid one); "local" when no tokens are configured.

    ``AuthMiddleware`` has checked the token already, before the body was read; this reads what it found.
    """
    tokens: dict[str, str] = request.app.state.settings.api_tokens
    if not tokens:
        return LOCAL_OWNER
    owner = getattr(request.state, "owner", None)
    if owner is None:
        owner = bearer_owner(tokens, request.headers.get("authorization", ""))
    return owner


ServiceDep = Annotated[JobService, Depends(get_service)]
StoreDep = Annotated[JobStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
OwnerDep = Annotated[str, Depends(get_owner)]


def get_owned_job(job_id: str, store: StoreDep, owner: OwnerDep) -> JobRecord:
    """The caller's job; 404 for a missing job and for another owner's (no existence leak)."""
    return store.get_job(job_id, owner=owner)


JobDep = Annotated[JobRecord, Depends(get_owned_job)]
