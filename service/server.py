"""Running the app under uvicorn with bounded reads: ``serve(app, settings)``, used by ``longtail serve`` and
``python -m service``.

- ``timeout_keep_alive``: an idle kept-alive connection is closed after ``keep_alive_timeout_s``;
- ``h11_max_incomplete_event_size``: request headers are capped at 16 KiB (431/400 beyond);
- ``header_read_timeout_s``: a connection that has not sent complete request headers in time is closed
  (uvicorn has no such timeout of its own: ``HeaderTimeoutH11Protocol`` adds it);
- a request body that stalls is answered 408 by ``BodyLimitMiddleware`` (``body_read_timeout_s``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings

MAX_HEADER_BYTES = 16 * 1024


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are incomplete after a deadline."""

    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_deadline, cycle)

    def _header_deadline(self, cycle_at_arm: Any) -> None:
        # A new request cycle since the timer was armed means its headers arrived in time.
        if self.cycle is cycle_at_arm and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: Any, settings: Settings, *, log_level: str = "info", **kwargs: Any) -> uvicorn.Config:
    protocol = type(
        "LongtailH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": settings.header_read_timeout_s}
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        http=protocol,
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout_s)),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **kwargs,
    )


def serve(app: Any, settings: Settings, *, log_level: str = "info") -> None:
    uvicorn.Server(uvicorn_config(app, settings, log_level=log_level)).run()
