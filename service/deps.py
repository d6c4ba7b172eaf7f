"""FastAPI dependencies: the service objects and the caller's identity.

The ones that do no I/O are ``async``: FastAPI would run a plain ``def`` dependency in the thread pool, one thread
hop per dependency per request.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.core import JobService
from service.errors import Unauthorized
from service.metrics import Metrics
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
    """The owner of the bearer token (401 without a valid one); "local" when no tokens are configured."""
    tokens: dict[str, str] = request.app.state.settings.api_tokens
    if not tokens:
        return LOCAL_OWNER
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    owner = None
    for known, who in tokens.items():  # compare against every token: no early exit, constant time per token
        if hmac.compare_digest(known.encode(), token.strip().encode()):
            owner = who
    if owner is None:
        raise Unauthorized("invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
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
