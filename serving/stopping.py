"""Requests in flight when the service is told to stop either finish or get 503.

On SIGTERM or SIGINT uvicorn stops accepting connections and gives running requests its
graceful-shutdown time (`clinassist serve` sets it: CLINASSIST_STOP_GRACE_S); then it cancels
them and the client gets a bare 500. This middleware answers a request still running one
second before that moment with 503 `{error, reason}` instead, so the client knows to retry.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MARGIN_S = 1.0  # answered this long before the server would cancel the request


class AnswerBeforeStopping:
    """ASGI middleware; it learns of the stop by chaining to the server's own signal handler."""

    def __init__(self, app: ASGIApp, grace_s: float | None = None) -> None:
        self.app = app
        self.grace_s = grace_s if grace_s is not None else float(
            os.environ.get("CLINASSIST_STOP_GRACE_S", "5"))
        self._stopping: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stopping = self._stop_event()
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        request = asyncio.ensure_future(self.app(scope, receive, tracked))
        watcher = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({request, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not request.done():  # stopping: give it what is left of the grace
                await asyncio.wait({request}, timeout=max(self.grace_s - MARGIN_S, 0))
        finally:
            watcher.cancel()
        if request.done():
            return request.result()  # its answer went out; its exception propagates
        request.cancel()
        if not started:
            await _send_503(send)

    def _stop_event(self) -> asyncio.Event:
        """Set when SIGTERM or SIGINT arrives; the handler uvicorn installed still runs."""
        if self._stopping is None:
            self._stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous = signal.getsignal(signum)

                def handler(number, frame, previous=previous) -> None:
                    loop.call_soon_threadsafe(self._stopping.set)
                    if callable(previous):
                        previous(number, frame)
                signal.signal(signum, handler)
        return self._stopping


async def _send_503(send: Send) -> None:
    body = json.dumps({"error": "stopping", "reason": "The service is stopping and could not "
                       "finish this request in time; send it again in a moment."}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", b"5")]})
    await send({"type": "http.response.body", "body": body})
