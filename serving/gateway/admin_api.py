"""`/v1/gateway/jobs`: the gateway's queue for administrators (permission `gateway:admin`).

`GET /v1/gateway/jobs?state=dead` lists jobs (all states without `state`) and the counts per
state; `POST /v1/gateway/jobs/{job_id}/retry` sends a dead-lettered job through again.
"""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse

from clinassist.config import home_dir
from clinassist.errors import ClinassistError
from clinassist.serving.gateway.config import CONFIG_FILE, GatewayConfig
from clinassist.serving.gateway.queue import JOB_STATES, JobQueue
from clinassist.serving.security import Route

ROUTES = [Route("GET", r"/v1/gateway/jobs", "gateway:admin"),
          Route("POST", r"/v1/gateway/jobs/[0-9a-f]{32}/retry", "gateway:admin")]


def _queue() -> JobQueue:
    from clinassist.serving.gateway.gateway import open_queue

    home = home_dir()
    return open_queue(home, GatewayConfig.load(home / CONFIG_FILE))


def _error(status: int, code: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": code, "reason": reason}, status_code=status)


async def jobs(request: Request) -> JSONResponse:
    """Jobs (oldest first) and the count per state; `?state=` filters the list."""
    state = request.query_params.get("state")
    if state is not None and state not in JOB_STATES:
        return _error(400, "bad-state", f"state is one of {', '.join(JOB_STATES)}; got {state!r}")
    try:
        queue = _queue()
    except ClinassistError as error:
        return _error(404, "no-gateway", str(error))
    return JSONResponse({"counts": queue.counts(),
                         "jobs": [asdict(job) for job in queue.jobs(state)]})


async def retry(request: Request, job_id: str) -> JSONResponse:
    """Queue one dead-lettered job again; 404 when no dead job has that id."""
    try:
        revived = _queue().retry(job_id)
    except ClinassistError as error:
        return _error(404, "no-gateway", str(error))
    if not revived:
        return _error(404, "not-dead", f"no dead-lettered job {job_id}; list them with "
                                       "GET /v1/gateway/jobs?state=dead")
    return JSONResponse({"job": job_id, "retried": True})
