"""``/losses``, ``/datasets``, ``/models``: what a client needs to build a job form."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.deps import OwnerDep

router = APIRouter(tags=["catalog"])


@router.get("/losses")
def losses(owner: OwnerDep) -> list[dict[str, Any]]:
    """Every loss branch: its parameters (type, default, bounds, searchable) and what it needs."""
    from jobs.catalog import losses_catalog

    return losses_catalog()


@router.get("/datasets")
def datasets(owner: OwnerDep) -> list[dict[str, Any]]:
    """Every dataset: its parameters, defaults and which of them are paths under the data root."""
    from jobs.catalog import datasets_catalog

    return datasets_catalog()


@router.get("/models")
def models(owner: OwnerDep) -> list[dict[str, Any]]:
    """Every model and its parameters."""
    from jobs.catalog import models_catalog

    return models_catalog()
