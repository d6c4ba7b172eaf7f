"""The body-size limit: 413 from the Content-Length header, or as soon as a streamed body passes the limit."""

from __future__ import annotations

import json
from typing import Any

from service.errors import PayloadTooLarge, error_body


class BodyLimitMiddleware:
    def __init__(self, app: Any, *, max_bytes: int, internal_max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.internal_max_bytes = internal_max_bytes

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
        exceeded = False

        async def limited_receive() -> Any:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise PayloadTooLarge(f"the request body exceeds {limit} bytes", {"limit": limit})
            return message

        async def guarded_send(message: Any) -> None:
            if not exceeded:  # whatever the app makes of the aborted body read, the answer is 413
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await _reject(send, limit)


async def _reject(send: Any, limit: int) -> None:
    body = json.dumps(
        error_body("payload_too_large", f"the request body exceeds {limit} bytes", {"limit": limit})
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
