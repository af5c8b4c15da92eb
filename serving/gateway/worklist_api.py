"""`GET /v1/worklist`: studies by priority, for radiologists (mounted by `serving.service`)."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse

from clinassist.config import home_dir
from clinassist.serving.gateway.worklist import Worklist, max_wait_from_env
from clinassist.serving.imaging.feedback import FeedbackStore
from clinassist.serving.security import Route

ROUTE = Route("GET", r"/v1/worklist", "worklist:read")


async def worklist(request: Request) -> JSONResponse:
    """Studies the gateway triaged: urgent first (a routine study waiting longer than
    $CLINASSIST_WORKLIST_MAX_WAIT_MINUTES is escalated), then the longest waiting."""
    entries = Worklist(home_dir(), max_wait_from_env()).entries()
    request.state.audit_patient_ids = [entry.patient_id for entry in entries if entry.patient_id]
    readings = FeedbackStore(home_dir()).studies_with_feedback()  # the newest reading, if any
    return JSONResponse({"studies": [{**asdict(entry), "feedback": readings.get(
        entry.study_instance_uid)} for entry in entries]})
