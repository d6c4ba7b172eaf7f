"""The FastAPI job service: persisted jobs, Ray dispatch, live progress, results, auth."""

from service.app import create_app
from service.client import AsyncClient, Client, LongtailError
from service.settings import Settings

__all__ = ["AsyncClient", "Client", "LongtailError", "Settings", "create_app"]
