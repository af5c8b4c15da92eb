"""ASGI middleware: authenticate, authorise by route, and audit every non-open HTTP request.

Wrap the service (BentoML: `svc.add_asgi_middleware(AuthAuditMiddleware, home=..., routes=...)`).
Handlers read the caller from `request.state.principal` and name the patients a request
touched in `request.state.audit_patient_ids`; the audit row, with the response's status as
its outcome, is written before the response's last message goes out (or, when none does, once
the request has ended), so a client that has an answer in full knows its request was audited,
even if the process is killed right after.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clinassist.serving.security.audit import AuditTrail
from clinassist.serving.security.jwt import TrustedIssuers
from clinassist.serving.security.principal import Principal
from clinassist.serving.security.roles import Permission, is_allowed, parse_permission
from clinassist.serving.security.users import KEY_PREFIX, UserStore

DEFAULT_OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/docs",
                      "/static/", "/static_content/")
ANONYMOUS = "anonymous"
NO_ROLE = "none"
POLICY_VIOLATION = 1008  # WebSocket close code


class Route(NamedTuple):
    method: str  # an HTTP method, or "*" for any
    path: str  # a regular expression the whole path must match
    permission: str


class AuthAuditMiddleware:
    """Default deny: a request passes only if its route's permission belongs to its role.

    `routes` are tried in order; the first whose method and path match decides the permission.
    `open_paths` pass without credentials or audit; an entry ending in "/" opens everything
    below it. WebSocket connections are refused, since no route can grant them.
    """

    def __init__(self, app: ASGIApp, *, home: Path, routes: Iterable[tuple[str, str, str]],
                 open_paths: Iterable[str] = DEFAULT_OPEN_PATHS) -> None:
        self.app = app
        self._routes = [(method.upper(), re.compile(path), parse_permission(permission))
                        for method, path, permission in routes]
        self._open_paths = tuple(open_paths)
        self._users = UserStore(home)
        self._issuers = TrustedIssuers(home)
        self._audit = AuditTrail(home)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        elif scope["type"] != "http" or self._is_open(scope["path"]):
            await self.app(scope, receive, send)
        else:
            await self._guard(scope, receive, send)

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        permission = self._permission(method, path)
        token = _bearer_token(scope)
        state = scope.setdefault("state", {})
        principal: Principal | None = None
        detail = None

        async def audit() -> None:
            record = partial(
                self._audit.record,
                actor=principal.name if principal else ANONYMOUS,
                role=principal.role if principal else NO_ROLE,
                action=permission or f"{method} {path}", resource=path,
                outcome=response.status, patient_ids=state.get("audit_patient_ids") or (),
                detail=detail)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(record)

        response = _StatusRecorder(send, audit)
        try:
            if token is not None:
                principal = await anyio.to_thread.run_sync(self._authenticate, token)
            if principal is None:
                reason, challenge = _unauthenticated(token)
                await _send_json(response.send, 401, "unauthenticated", reason,
                                 [(b"www-authenticate", challenge)])
            elif permission is None:
                await _send_json(response.send, 403, "forbidden",
                                 f"no route grants access to {method} {path}")
            elif not is_allowed(principal.role, permission):
                await _send_json(response.send, 403, "forbidden",
                                 f"role {principal.role} lacks permission {permission}")
            else:
                state["principal"] = principal
                await self.app(scope, receive, response.send)
        except BaseException as error:
            detail = f"request ended by {type(error).__name__}"
            raise
        finally:
            if not response.ended:  # no complete response went out
                await audit()

    def _is_open(self, path: str) -> bool:
        return any(path == entry or (entry.endswith("/") and path.startswith(entry))
                   for entry in self._open_paths)

    def _permission(self, method: str, path: str) -> Permission | None:
        for route_method, pattern, permission in self._routes:
            if route_method in ("*", method) and pattern.fullmatch(path):
                return permission
        return None

    def _authenticate(self, token: str) -> Principal | None:
        if token.startswith(KEY_PREFIX):
            return self._users.authenticate_key(token)
        return self._issuers.authenticate_jwt(token)


class _StatusRecorder:
    """Passes messages on, keeps the response status (500 until a response starts), and awaits
    `before_end` once, before the response's last body message."""

    def __init__(self, send: Send, before_end: Callable[[], Awaitable[None]]) -> None:
        self._send, self._before_end = send, before_end
        self.status = 500
        self.ended = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif (message["type"] == "http.response.body" and not message.get("more_body", False)
              and not self.ended):
            self.ended = True
            await self._before_end()
        await self._send(message)


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _unauthenticated(token: str | None) -> tuple[str, bytes]:
    """The reason for a 401 and its RFC 6750 challenge."""
    if token is None:
        return ("missing credentials; send 'Authorization: Bearer <API key or JWT>'",
                b'Bearer realm="clinassist"')
    return ("invalid, expired, revoked or replayed credentials; use a current API key or a "
            "freshly signed JWT from a trusted issuer",
            b'Bearer realm="clinassist", error="invalid_token"')


async def _send_json(send: Send, status: int, error: str, reason: str,
                     headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": error, "reason": reason}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode("ascii")), *headers]})
    await send({"type": "http.response.body", "body": body})

