"""The FastAPI job service: persisted jobs, Ray dispatch, live progress, results, auth.

``from service import Client, AsyncClient`` loads only the client (httpx and pydantic); the server parts
(``create_app``, ``Settings``) are imported on first use, so a client-only install never loads FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.client import AsyncClient, Client, LongtailError

if TYPE_CHECKING:
    from service.app import create_app
    from service.settings import Settings

__all__ = ["AsyncClient", "Client", "LongtailError", "Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from service.app import create_app

        return create_app
    if name == "Settings":
        from service.settings import Settings

        return Settings
    raise AttributeError(f"module 'service' has no attribute {name!r}")
