"""The application factory: ``create_app(settings)``; ``uvicorn --factory service.app:create_app`` works too."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from jobs.spec import JobSpec
from service.core import JobService
from service.dispatcher import Dispatcher
from service.errors import install_error_handlers
from service.metrics import Metrics, MetricsMiddleware
from service.middleware import PUBLIC_PATHS, AuthMiddleware, BodyLimitMiddleware, SecurityHeadersMiddleware
from service.routers import catalog, health, internal, jobs
from service.settings import Settings, get_settings, is_loopback
from service.store import JobStore

logger = logging.getLogger("service")

STATIC_DIR = Path(__file__).resolve().parent / "static"


def check_binding(settings: Settings) -> None:
    """Without tokens the API is open: allow that on loopback only, and say so."""
    if settings.auth_enabled:
        return
    if not is_loopback(settings.host):
        raise RuntimeError(
            f"refusing to serve on {settings.host!r} without API tokens: set LONGTAIL_API_TOKENS or bind to 127.0.0.1"
        )
    logger.warning("no API tokens configured: the API is unauthenticated (owner 'local'), loopback only")


def create_app(
    settings: Settings | None = None, *, dispatcher: Dispatcher | None = None, store: JobStore | None = None
) -> FastAPI:
    """Build the app. ``dispatcher``/``store`` replace the Ray dispatcher and the settings' store (tests)."""
    settings = settings or get_settings()
    check_binding(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_store = store or JobStore(str(settings.store_url))
        if dispatcher is None:
            from service.dispatcher import RayDispatcher

            the_dispatcher: Dispatcher = RayDispatcher(settings)
        else:
            the_dispatcher = dispatcher
        service = JobService(settings, the_store, the_dispatcher)
        await service.start()
        app.state.service = service
        try:
            yield
        finally:
            await service.stop()
            if store is None:
                the_store.close()

    app = FastAPI(
        title="longtail-service",
        version="0.1.0",
        summary="Train and tune classifiers on long-tailed data with long-tail losses, on a Ray cluster.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.include_router(jobs.router)
    app.include_router(catalog.router)
    app.include_router(health.router)
    app.include_router(internal.router)
    # Added innermost first: a request meets the security headers, the metrics, authentication (before any body is
    # read), then the body-size limit and read timeout.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        internal_max_bytes=settings.max_event_body_bytes,
        read_timeout_s=settings.body_read_timeout_s,
    )
    app.add_middleware(AuthMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    _mount_ui(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _mount_ui(app: FastAPI) -> None:
    """The no-build web UI (``service/static``) at ``/ui``; its files are public, its API calls carry a token."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/ui", include_in_schema=False)
    def ui_index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    # The page's scripts are ES modules, which browsers run only when served with a JavaScript MIME type; some
    # systems map ".js" to text/plain (a Windows registry entry, an old /etc/mime.types), so say it here.
    mimetypes.add_type("text/javascript", ".js")
    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True, check_dir=False), name="ui")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, with ``POST /jobs`` documented as taking a JobSpec (it is validated by hand)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    spec_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(spec_schema.pop("$defs", {}))
    components["JobSpec"] = spec_schema
    post = schema["paths"]["/jobs"]["post"]
    post["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}},
    }
    # POST /jobs/{job_id}/predict parses its body strictly by hand, too: it takes a PredictRequest.
    from service.schemas import PredictRequest

    predict_schema = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(predict_schema.pop("$defs", {}))
    components["PredictRequest"] = predict_schema
    schema["paths"]["/jobs/{job_id}/predict"]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
    }
    # Every error body is an ErrorResponse, request validation's 422 included (service.errors).
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for operations in schema["paths"].values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                for media in (response.get("content") or {}).values():
                    if media.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                        media["schema"] = error_ref
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    # Authentication: a bearer token everywhere but the public paths (when tokens are configured), the driver
    # secret on /internal (AuthMiddleware checks both before a body is read).
    schema["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API token (LONGTAIL_API_TOKENS)"},
        "driverSecret": {"type": "apiKey", "in": "header", "name": "X-Longtail-Driver-Secret"},
    }
    for path, operations in schema["paths"].items():
        if path in PUBLIC_PATHS:
            continue
        for operation in operations.values():
            operation["security"] = [{"driverSecret": []}] if path.startswith("/internal/") else [{"bearer": []}]
            if not path.startswith("/internal/"):
                operation.setdefault("responses", {}).setdefault(
                    "401",
                    {
                        "description": "Missing or invalid bearer token",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
                    },
                )
    app.openapi_schema = schema
    return schema
