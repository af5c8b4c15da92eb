"""`POST|GET /v1/imaging/results/{id}/feedback`: the radiologist's reading of a triaged study.

POST (permission `imaging:feedback`) takes `{"reading": "pneumonia" | "no_pneumonia" |
"not_assessable", "reason": "optional free text"}` and answers 201 with the stored row; a second
answer on the same result is kept beside the first and becomes the current one (`supersedes`
names the row it replaced). GET (`imaging:results`) returns the current reading and the history.
The patients touched are named to the audit trail from the result's SR.
"""

from __future__ import annotations

import json
import threading

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from clinassist.config import home_dir
from clinassist.serving.http_body import BodyTooLarge, parse_json, read_capped
from clinassist.serving.imaging.feedback import FeedbackStore, Reading
from clinassist.serving.imaging.monitoring_metrics import service_monitor
from clinassist.serving.security import Route

PATH = r"/v1/imaging/results/[0-9a-f]{32}/feedback"
ROUTES = [Route("POST", PATH, "imaging:feedback"), Route("GET", PATH, "imaging:results")]
MAX_BODY_BYTES = 16 * 1024
MAX_REASON_CHARS = 2000

router = APIRouter(tags=["imaging"])
_store_lock = threading.Lock()


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reading: Reading
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)


def problem(status: int, code: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": code, "reason": reason}, status_code=status)


def shared_store(request: Request) -> FeedbackStore:
    with _store_lock:
        if getattr(request.app.state, "feedback", None) is None:
            request.app.state.feedback = FeedbackStore(home_dir())
        return request.app.state.feedback


def stored_result(request: Request, result_id: str) -> dict | None:
    """The triage result's summary, and the patient it concerns named to the audit trail."""
    results = request.app.state.results
    summary = results.read(result_id, "json")
    if summary is None:
        return None
    patient_id = results.patient_id(result_id)
    request.state.audit_patient_ids = [patient_id] if patient_id else []
    return json.loads(summary)


def _not_found(result_id: str) -> JSONResponse:
    return problem(404, "not-found", f"no triage result {result_id}; give the id a triage "
                                     "answer returned")


async def parse(request: Request) -> FeedbackRequest | JSONResponse:
    try:
        body = await read_capped(request, MAX_BODY_BYTES)
    except BodyTooLarge as too_large:
        return problem(413, "too-large", f"{too_large}; keep the reason under "
                                         f"{MAX_REASON_CHARS} characters")
    try:
        payload = parse_json(body)
    except ValueError as bad:
        return problem(400, "not-json", f'the body is not JSON ({bad}); send {{"reading": '
                                        '"pneumonia" | "no_pneumonia" | "not_assessable", '
                                        '"reason": "..."}')
    try:
        return FeedbackRequest.model_validate(payload)
    except ValidationError as invalid:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                            for e in invalid.errors()[:5])
        return problem(422, "invalid-feedback", f"{details}. Allowed readings: "
                                                f"{', '.join(r.value for r in Reading)}")


@router.post("/imaging/results/{result_id}/feedback", status_code=201)
async def post_feedback(request: Request, result_id: str) -> JSONResponse:
    """Record the radiologist's reading of a triaged study (the newest reading counts)."""
    request.state.audit_patient_ids = []
    result = await run_in_threadpool(stored_result, request, result_id)
    if result is None:
        return _not_found(result_id)
    parsed = await parse(request)
    if isinstance(parsed, JSONResponse):
        return parsed
    store = await run_in_threadpool(shared_store, request)
    added, supersedes = await run_in_threadpool(store.add, result, parsed.reading, parsed.reason,
                                                request.state.principal.name)
    await run_in_threadpool(service_monitor(request.app.state).feedback_recorded, added)
    return JSONResponse({**added.public(), "supersedes": supersedes}, status_code=201)


@router.get("/imaging/results/{result_id}/feedback")
async def get_feedback(request: Request, result_id: str) -> JSONResponse:
    """The current reading of a triaged study (null if none yet) and every reading, oldest first."""
    request.state.audit_patient_ids = []
    if await run_in_threadpool(stored_result, request, result_id) is None:
        return _not_found(result_id)
    store = await run_in_threadpool(shared_store, request)
    history = await run_in_threadpool(store.history, result_id)
    return JSONResponse({"result_id": result_id,
                         "current": history[-1].public() if history else None,
                         "history": [item.public() for item in history]})
