"""ASGI middleware, outermost first: security headers, authentication, the body-size limit and body-read timeout.

Authentication runs before any route and so before any body is read: FastAPI parses a JSON body before it solves
a route's dependencies, so a dependency alone would let an anonymous caller make the service parse (and hold) a
large body. A refused request gets its 401/403 without a byte of its body being read, and ``Connection: close``
when it announced one (the unread body cannot be skipped on a kept-alive connection).

- ``/internal/...`` is authenticated by the job's driver secret (``X-Longtail-Driver-Secret``);
- the public paths (``PUBLIC_PATHS``, ``/ui/...``) need nothing;
- everything else needs a bearer token when tokens are configured; the owner goes into ``scope["state"]``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from typing import Any

from starlette.concurrency import run_in_threadpool

from service.errors import DomainError, PayloadTooLarge, error_body

PUBLIC_PATHS = frozenset({"/", "/ui", "/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_INTERNAL_EVENTS = re.compile(r"^/internal/jobs/([^/]{1,64})/events$")

# The page is self-contained (service/static: no inline script or style, no CDN); figures are same-origin images.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's /docs page loads Swagger UI from a CDN and runs an inline script: it gets its own, looser policy.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeadersMiddleware:
    """Adds CSP, ``nosniff``, ``X-Frame-Options: DENY`` and a referrer policy to every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] in ("/docs", "/redoc") else CSP

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                if b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", csp.encode()))
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def bearer_owner(tokens: dict[str, str], authorization: str) -> str:
    """The owner of ``Authorization: Bearer <token>``; ``Unauthorized`` without a valid one."""
    from service.errors import Unauthorized

    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    owner = None
    presented = token.strip().encode()
    for known, who in tokens.items():  # compare against every token: no early exit, constant time per token
        if hmac.compare_digest(known.encode(), presented):
            owner = who
    if owner is None:
        raise Unauthorized("invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    return owner


class AuthMiddleware:
    """Authenticates every request that needs it before the app (and its body parsing) sees it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        try:
            if path.startswith("/internal/"):
                await self._check_driver(scope)
            elif not (path in PUBLIC_PATHS or path.startswith("/ui/")):
                self._check_bearer(scope)
        except DomainError as exc:
            await _send_error(send, exc.status_code, exc.code, exc.message, exc.details, exc.headers, scope)
            return
        await self.app(scope, receive, send)

    def _check_bearer(self, scope: Any) -> None:
        tokens: dict[str, str] = scope["app"].state.settings.api_tokens
        if tokens:
            owner = bearer_owner(tokens, _header(scope, b"authorization"))
            scope.setdefault("state", {})["owner"] = owner

    async def _check_driver(self, scope: Any) -> None:
        from service.errors import NotFound, Unauthorized

        match = _INTERNAL_EVENTS.match(scope["path"])
        if match is None:
            raise NotFound("not found")
        secret = _header(scope, b"x-longtail-driver-secret")
        if not secret:
            raise Unauthorized("missing driver secret")
        service = scope["app"].state.service
        job = await run_in_threadpool(service.check_driver_secret, match.group(1), secret[:512])
        scope.setdefault("state", {})["driver_job"] = job


def _header(scope: Any, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


def _has_body(scope: Any) -> bool:
    for key, value in scope.get("headers", ()):
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


async def _send_error(
    send: Any,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
    scope: Any = None,
) -> None:
    body = json.dumps(error_body(code, message, details)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if scope is None or _has_body(scope):
        raw.append((b"connection", b"close"))  # the body was not read: this connection cannot carry another request
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """413 from the Content-Length header, or as soon as a streamed body passes the limit; 408 for a body that
    stalls for ``read_timeout_s`` between chunks (a client announcing more bytes than it sends)."""

    def __init__(self, app: Any, *, max_bytes: int, internal_max_bytes: int, read_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.internal_max_bytes = internal_max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.internal_max_bytes if scope["path"].startswith("/internal/") else self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _reject(send, limit)
                    return
        seen = 0
        failed: tuple[int, str, str, Any] | None = None
        body_done = False

        async def limited_receive() -> Any:
            nonlocal seen, failed, body_done
            if body_done:  # after the body: only a disconnect is left to wait for, without a deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=self.read_timeout_s)
            except asyncio.TimeoutError:
                failed = (408, "request_timeout", f"the request body stalled for {self.read_timeout_s:g} s", None)
                raise PayloadTooLarge(failed[2]) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > limit:
                    failed = (413, "payload_too_large", f"the request body exceeds {limit} bytes", {"limit": limit})
                    raise PayloadTooLarge(failed[2], failed[3])
            return message

        async def guarded_send(message: Any) -> None:
            if failed is None:  # whatever the app makes of the aborted body read, the answer is 413/408
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if failed is None:
                raise
        if failed is not None:
            await _send_error(send, failed[0], failed[1], failed[2], failed[3])


async def _reject(send: Any, limit: int) -> None:
    await _send_error(send, 413, "payload_too_large", f"the request body exceeds {limit} bytes", {"limit": limit})
