"""AuthAuditMiddleware around a small Starlette app: who gets in, and what the audit trail says."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route as StarletteRoute

from clinassist.serving.security import (
    AuditTrail,
    AuthAuditMiddleware,
    Route,
    TrustedIssuers,
    UserStore,
    load_site_key,
    pseudonymise,
)
from clinassist.serving.security.errors import UnknownPermissionError

RAW_ID = "MRN-4242"
ISSUER = "https://ehr.example.org"
ROUTES = [
    Route("POST", r"/triage", "imaging:triage"),
    Route("GET", r"/results/[^/]+", "imaging:results"),
    Route("GET", r"/boom", "imaging:results"),
    Route("GET", r"/stream", "worklist:read"),
    Route("*", r"/cds-services/[\w-]+", "cds:invoke"),
]


async def results(request: Request) -> JSONResponse:
    request.state.audit_patient_ids = [RAW_ID]
    principal = request.state.principal
    return JSONResponse({"name": principal.name, "role": principal.role,
                         "method": principal.method})


async def triage(request: Request) -> JSONResponse:
    return JSONResponse({"queued": True}, status_code=202)


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError(f"model crashed on {RAW_ID}")


async def stream(request: Request) -> StreamingResponse:
    async def chunks():
        for n in range(3):
            yield f"item {n}\n".encode()
    return StreamingResponse(chunks(), status_code=206)


async def cds(request: Request) -> JSONResponse:
    return JSONResponse({"cards": []})


async def livez(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@pytest.fixture
def home(tmp_path):
    return tmp_path


@pytest.fixture
def app(home):
    return Starlette(
        routes=[StarletteRoute("/triage", triage, methods=["POST"]),
                StarletteRoute("/results/{uid}", results), StarletteRoute("/boom", boom),
                StarletteRoute("/stream", stream),
                StarletteRoute("/cds-services/{hook}", cds, methods=["POST"]),
                StarletteRoute("/livez", livez), StarletteRoute("/metrics", livez)],
        middleware=[Middleware(AuthAuditMiddleware, home=home, routes=ROUTES)])


@pytest.fixture
def keys(home):
    store = UserStore(home)
    return {role: store.add(f"{role}-user", role)[1]
            for role in ("radiologist", "pharmacist", "ml_engineer")}


def call(app, method: str, path: str, token: str | None = None) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, headers=headers)
    return asyncio.run(send())


def audit_rows(home):
    return AuditTrail(home).records()


def test_no_credentials_is_401_with_a_bearer_challenge_and_is_audited(app, home):
    response = call(app, "GET", "/results/1.2.3")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthenticated"
    assert "Authorization: Bearer" in response.json()["reason"]
    [row] = audit_rows(home)
    assert (row.actor, row.role, row.action, row.resource, row.outcome) == (
        "anonymous", "none", "imaging:results", "/results/1.2.3", "401")
    assert row.patients == ()


@pytest.mark.parametrize("header", ["Bearer ca_not-a-real-key", "Basic dXNlcjpwYXNz",
                                    "Bearer eyJhbGciOiJub25lIn0.e30."])
def test_bad_credentials_are_401(app, home, keys, header):
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/results/1", headers={"Authorization": header})
    response = asyncio.run(send())
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    assert [row.outcome for row in audit_rows(home)] == ["401"]


def test_role_without_the_permission_is_403(app, home, keys):
    response = call(app, "POST", "/triage", keys["pharmacist"])
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden",
                               "reason": "role pharmacist lacks permission imaging:triage"}
    [row] = audit_rows(home)
    assert (row.actor, row.role, row.action, row.outcome) == (
        "pharmacist-user", "pharmacist", "imaging:triage", "403")


def test_path_without_a_route_is_denied_by_default(app, home, keys):
    response = call(app, "DELETE", "/results/1", keys["radiologist"])
    assert response.status_code == 403
    assert "no route grants access to DELETE /results/1" in response.json()["reason"]
    assert audit_rows(home)[0].action == "DELETE /results/1"


def test_right_role_reaches_the_handler_which_sees_the_principal(app, home, keys):
    response = call(app, "GET", "/results/1.2.3?patient=x", keys["ml_engineer"])
    assert response.status_code == 200
    assert response.json() == {"name": "ml_engineer-user", "role": "ml_engineer",
                               "method": "api-key"}
    [row] = audit_rows(home)
    assert (row.actor, row.action, row.resource, row.outcome) == (
        "ml_engineer-user", "imaging:results", "/results/1.2.3", "200")


def test_patient_ids_set_by_the_handler_are_audited_as_pseudonyms(app, home, keys):
    call(app, "GET", "/results/1.2.3", keys["radiologist"])
    assert audit_rows(home)[0].patients == (pseudonymise(RAW_ID, load_site_key(home)),)
    stored = b"".join(path.read_bytes() for path in home.glob("*.db*"))
    assert RAW_ID.encode() not in stored
    assert keys["radiologist"].encode() not in stored


def test_open_paths_need_no_credentials_and_are_not_audited(app, home):
    assert call(app, "GET", "/livez").text == "ok"
    assert call(app, "GET", "/metrics").status_code == 200
    assert audit_rows(home) == []


def test_handler_error_is_audited_as_500_without_its_message(app, home, keys):
    response = call(app, "GET", "/boom", keys["radiologist"])
    assert response.status_code == 500
    [row] = audit_rows(home)
    assert (row.outcome, row.detail) == ("500", "request ended by RuntimeError")
    assert RAW_ID.encode() not in b"".join(p.read_bytes() for p in home.glob("audit.db*"))


def test_streaming_response_is_audited_with_its_status(app, home, keys):
    response = call(app, "GET", "/stream", keys["radiologist"])
    assert (response.status_code, response.text) == (206, "item 0\nitem 1\nitem 2\n")
    assert [row.outcome for row in audit_rows(home)] == ["206"]


def test_every_guarded_call_leaves_exactly_one_row_and_the_chain_holds(app, home, keys):
    calls = [("GET", "/results/1", None), ("GET", "/results/1", keys["pharmacist"]),
             ("POST", "/triage", keys["radiologist"]), ("GET", "/livez", None),
             ("GET", "/stream", keys["radiologist"]), ("GET", "/nowhere", keys["radiologist"])]
    statuses = [call(app, method, path, token).status_code for method, path, token in calls]
    assert statuses == [401, 403, 202, 200, 206, 403]
    assert [row.outcome for row in audit_rows(home)] == ["401", "403", "202", "206", "403"]
    assert AuditTrail(home).verify().ok


def test_jwt_from_a_trusted_issuer_is_accepted_once(app, home):
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    TrustedIssuers(home).trust_issuer(ISSUER, pem, "pharmacist",
                                      audience="http://test/cds-services/med-risk")
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": "http://test/cds-services/med-risk", "iat": now,
                        "exp": now + 60, "jti": uuid.uuid4().hex}, private_key, algorithm="ES256")
    assert call(app, "POST", "/cds-services/med-risk", token).status_code == 200
    assert call(app, "POST", "/cds-services/med-risk", token).status_code == 401
    assert [(row.actor, row.outcome) for row in audit_rows(home)] == [(ISSUER, "200"),
                                                                      ("anonymous", "401")]


def test_websocket_connections_are_refused(home):
    async def never_called(scope, receive, send):
        raise AssertionError("the app must not see the connection")

    sent = []

    async def send(message):
        sent.append(message)

    middleware = AuthAuditMiddleware(never_called, home=home, routes=ROUTES)
    asyncio.run(middleware({"type": "websocket", "path": "/results/1", "headers": []},
                           None, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_a_route_naming_an_unknown_permission_is_refused_at_startup(home):
    with pytest.raises(UnknownPermissionError, match="did you mean 'imaging:triage'"):
        AuthAuditMiddleware(livez, home=home, routes=[("POST", "/triage", "imaging:triag")])
