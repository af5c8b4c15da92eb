"""`GET /v1/worklist`: studies by priority, for radiologists (mounted by `serving.service`)."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse

from clinassist.config import home_dir
from clinassist.serving.gateway.worklist import Worklist, max_wait_from_env
from clinassist.serving.security import Route

ROUTE = Route("GET", r"/v1/worklist", "worklist:read")


async def worklist(request: Request) -> JSONResponse:
    """Studies the gateway triaged: urgent first (a routine study waiting longer than
    $CLINASSIST_WORKLIST_MAX_WAIT_MINUTES is escalated), then the longest waiting."""
    entries = Worklist(home_dir(), max_wait_from_env()).entries()
    request.state.audit_patient_ids = [entry.patient_id for entry in entries if entry.patient_id]
    return JSONResponse({"studies": [asdict(entry) for entry in entries]})
