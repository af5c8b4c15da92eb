"""HTTP handlers of the CDS Hooks services (mounted at /v1 by `serving.service`).

Callers authenticate with a JWT from a trusted issuer (CDS Hooks 2.0 section "Trusting CDS
Clients"), checked by the shared auth middleware before these handlers run.
"""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from clinassist.config import home_dir
from clinassist.serving.medication import cds, fhir
from clinassist.serving.medication.api import inline_schema, read_json, reviewed
from clinassist.serving.medication.cds_store import CdsStore
from clinassist.serving.medication.errors import InvalidRequest, MedicationError

FEEDBACK_DB = "cds_feedback.db"
_store_lock = threading.Lock()


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    card: str = Field(min_length=1)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[dict] | None = None
    overrideReason: dict | None = None
    outcomeTimestamp: str


class OrderContext(BaseModel):
    """The `context` of the order-select and order-sign hooks (CDS Hooks 2.0), as far as it is
    read: `draftOrders` a FHIR Bundle of MedicationRequests, `selections` their references."""

    model_config = ConfigDict(extra="allow")
    patientId: str | None = None
    draftOrders: dict | None = None
    selections: list[str] | None = None


class FeedbackRequest(BaseModel):
    feedback: list[FeedbackItem] = Field(min_length=1)


HOOK_OPENAPI = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"enum": sorted(set(cds.SERVICES.values()))},
        "hookInstance": {"type": "string", "minLength": 1},
        "fhirServer": {"type": "string"},
        "context": {"type": "object", "properties": {
            "userId": {"type": "string"}, "patientId": {"type": "string"},
            "draftOrders": fhir.BUNDLE_SCHEMA,
            "selections": {"type": "array", "items": {"type": "string"}}}},
        "prefetch": {"type": "object", "properties": {
            key: fhir.BUNDLE_SCHEMA if "?" in query else fhir.RESOURCE_SCHEMA
            for key, query in cds.PREFETCH.items()}}}}}}}}
FEEDBACK_OPENAPI = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": inline_schema(FeedbackRequest)}}}}


def shared_store(request: Request) -> CdsStore:
    with _store_lock:
        if getattr(request.app.state, "cds_store", None) is None:
            request.app.state.cds_store = CdsStore(home_dir() / FEEDBACK_DB)
        return request.app.state.cds_store


def problem(status: int, code: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": code, "reason": reason}, status_code=status)


def validated(model: type[BaseModel], payload: object) -> BaseModel:
    try:
        return model.model_validate(payload)
    except ValidationError as invalid:
        raise InvalidRequest("; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in invalid.errors()[:5])) from invalid


async def cds_discovery(request: Request) -> JSONResponse:
    """GET /cds-services: the order-select and order-sign services and their prefetch."""
    return JSONResponse(cds.discovery())


async def cds_service(request: Request, service_id: str) -> JSONResponse:
    """POST /cds-services/{id}: cards for the draft orders in `context.draftOrders`."""
    request.state.audit_patient_ids = []
    if service_id not in cds.SERVICES:
        return problem(404, "unknown-service", f"no CDS service {service_id!r}; see "
                                               "GET /cds-services")
    try:
        hook = validated(cds.HookRequest, await read_json(request))
        if hook.hook != cds.SERVICES[service_id]:
            raise InvalidRequest(f"{service_id} answers the {cds.SERVICES[service_id]} hook, "
                                 f"not {hook.hook}")
        if patient_id := hook.context.get("patientId"):
            request.state.audit_patient_ids = [str(patient_id)]
        context = validated(OrderContext, hook.context)
        if context.draftOrders is not None:
            fhir.validated(context.draftOrders)
        bundle, drafts = cds.hook_bundle(hook)
        fhir_input = fhir.read_bundle(bundle)
        result = await reviewed(request, fhir_input.patient, fhir_input.medications,
                                strict=False)
    except MedicationError as error:
        return JSONResponse(error.body(), status_code=error.http_status)
    shown = cds.cards(result, fhir_input, drafts, cds.CardPolicy.from_env())
    store = await run_in_threadpool(shared_store, request)
    await run_in_threadpool(store.issued, service_id,
                            [(card["uuid"], alert) for alert, card in shown if alert],
                            result["knowledge_base"]["version"])
    return JSONResponse({"cards": [card for _, card in shown]})


async def cds_feedback(request: Request, service_id: str) -> JSONResponse:
    """POST /cds-services/{id}/feedback: accepted or overridden (with reason), stored."""
    if service_id not in cds.SERVICES:
        return problem(404, "unknown-service", f"no CDS service {service_id!r}")
    try:
        body = validated(FeedbackRequest, await read_json(request))
    except MedicationError as error:
        return JSONResponse(error.body(), status_code=error.http_status)
    store = await run_in_threadpool(shared_store, request)
    uuids = [item.card for item in body.feedback]
    unknown = set(uuids) - await run_in_threadpool(store.known_cards, service_id, uuids)
    if unknown:
        return problem(404, "unknown-card", f"no card {', '.join(sorted(unknown))} was issued by "
                                            f"{service_id}")
    await run_in_threadpool(store.feedback, service_id,
                            [item.model_dump(exclude_none=True) for item in body.feedback])
    return JSONResponse({})
