"""The safety net under every HTTP route: an exception that no handler turned into an answer
becomes a JSON 500 `{error, reason}` and one log line without patient data.

Handlers refuse bad input themselves, with a 4xx and a reason; reaching this net is a bug. Its
log line names the exception type and the code path (file, line, function of each frame), never
the exception's message or any value, since those can quote what the request carried (a
patient's name in a DICOM header, an ID in a FHIR resource). The reference in the answer
finds the line.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("clinassist.serving")


class LastResort:
    """ASGI middleware; add it outside every other so nothing escapes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:  # the net itself: see the module docstring
            reference = uuid.uuid4().hex[:12]
            log.error("unexpected %s answering %s %s (reference %s); code path:\n%s",
                      _types(error), scope["method"], scope["path"], reference,
                      _code_path(error))
            if not started:  # else the server closes the connection of the broken answer
                await _send_500(send, reference)


def _types(error: BaseException) -> str:
    """The exception's type and those it was raised from, outermost first."""
    chain = []
    while error is not None and len(chain) < 8:
        chain.append(type(error).__name__)
        error = error.__cause__ or error.__context__
    return " from ".join(chain)


def _code_path(error: BaseException) -> str:
    return "".join(f"  {frame.filename}:{frame.lineno} in {frame.name}\n"
                   for frame in traceback.extract_tb(error.__traceback__))


async def _send_500(send: Send, reference: str) -> None:
    body = json.dumps({"error": "internal", "reason": "The service met an unexpected error and "
                       f"logged it as reference {reference}; the request may be retried, and if "
                       "it fails again, report the reference to the operator."}).encode()
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
