"""HTTP handlers of the imaging triage API (mounted at /v1 by `serving.service`)."""

from __future__ import annotations

import asyncio
import base64

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from clinassist.serving.dicom import DicomRejection
from clinassist.serving.http_body import BodyTooLarge, read_capped
from clinassist.serving.imaging.monitoring_metrics import record_triage
from clinassist.serving.imaging.results_store import Staged
from clinassist.serving.imaging.triage import ModelBusy

DICOM_TYPE = "application/dicom"
OBJECT_KINDS = ("sr", "sc")


TRIAGE_OPENAPI = {
    "parameters": [{"name": "include", "in": "query", "required": False,
                    "schema": {"type": "string", "example": "sr,sc"},
                    "description": "embed result objects (base64): sr, sc"}],
    "requestBody": {"required": True, "content": {
        DICOM_TYPE: {"schema": {"type": "string", "format": "binary"}},
        "multipart/related": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}}},
    }},
}
ERRORS = {status: {"description": why, "content": {"application/json": {"example": {
    "error": code, "reason": "a sentence saying why"}}}}
    for status, code, why in (
        (400, "not-dicom", "not DICOM, truncated, or a corrupt header"),
        (401, "unauthenticated", "no or invalid bearer credential"),
        (403, "forbidden", "the caller's role lacks the permission"),
        (413, "too-large", "body or Rows x Columns above the configured limit"),
        (415, "unsupported-media-type", "wrong media type or transfer syntax"),
        (422, "colour", "multi-frame, colour or unusable pixel data"),
        (503, "busy", "the model service is shedding load; retry"))}


def error(status: int, code: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": code, "reason": reason}, status_code=status)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 past `max_bytes` before it is all read."""
    try:
        return await read_capped(request, max_bytes)
    except BodyTooLarge as too_large:
        raise DicomRejection("too-large", str(too_large)) from too_large


def multipart_parts(body: bytes, content_type: str) -> list[bytes]:
    """The payload of every part of a multipart/related or multipart/form-data body."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise DicomRejection("not-dicom", "a multipart body needs a boundary parameter")
    parts: list[bytearray] = []
    parser = MultipartParser(boundary, {
        "on_part_begin": lambda: parts.append(bytearray()),
        "on_part_data": lambda data, start, end: parts[-1].extend(data[start:end]),
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as malformed:
        raise DicomRejection("not-dicom", "The multipart body is malformed (a part does not begin "
                             "or end with the boundary of the Content-Type); send each instance "
                             "as one part between '--BOUNDARY' lines, closed by '--BOUNDARY--'.") \
            from malformed
    return [bytes(part) for part in parts]


def instances(body: bytes, content_type: str) -> tuple[list[bytes], bool]:
    """The DICOM instances in a request body, and whether it was a multipart request."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type.startswith("multipart/"):
        return multipart_parts(body, content_type), True
    if media_type in (DICOM_TYPE, "application/octet-stream"):
        return [body], False
    raise DicomRejection("unsupported-media-type",
                         f"send {DICOM_TYPE} or multipart/related; got {media_type or 'nothing'}")


async def triage_one(request: Request, data: bytes, include: set[str]) -> tuple[int, dict]:
    """Answers once the model has scored the image, the SR and SC built after it (LaterObjects),
    unless the request embeds them or this process has enough results waiting already."""
    pipeline, store, later = (request.app.state.pipeline, request.app.state.results,
                              request.app.state.later)
    slot = not include and later.reserve()  # to build this result's objects after answering
    # The instance its objects will be built from, written and synced while it is scored.
    staging = asyncio.ensure_future(run_in_threadpool(store.stage, data)) if slot else None
    try:
        try:
            outcome = await (pipeline.decide(data) if slot else pipeline.triage(data))
        except DicomRejection as rejection:
            return rejection.http_status, {"error": rejection.code, "reason": rejection.message}
        except ModelBusy as busy:
            return 503, {"error": "busy", "reason": str(busy)}
        if patient_id := str(outcome.source.get("PatientID") or ""):  # Type 2: may be empty
            request.state.audit_patient_ids.append(patient_id)
        summary = outcome.summary()
        if staging is not None:  # fsync'd before the answer: off the loop
            claim = await run_in_threadpool(store.accept, summary, await staging, outcome.result)
            staging = None
            later.build(claim)  # the build's now
            result_id = claim.result_id
        else:
            result_id = await run_in_threadpool(store.save, summary, outcome.objects)
    finally:
        if staging is not None:  # refused, or failed: no result will use it
            staging.add_done_callback(_discard_staged)
            later.unreserve()
    await run_in_threadpool(record_triage, request.app.state, summary, result_id, outcome.pixels)
    body = {"id": result_id, **summary,
            "objects": {kind: f"/v1/imaging/results/{result_id}/{kind}" for kind in OBJECT_KINDS}}
    for kind in include & set(OBJECT_KINDS):
        body[kind] = base64.b64encode(outcome.objects[kind]).decode()
    return 200, body


def _discard_staged(staging: asyncio.Future[Staged]) -> None:
    if not staging.cancelled() and staging.exception() is None:
        staging.result().discard()


async def triage(request: Request) -> Response:
    """Triage one DICOM instance (`application/dicom`), or several in a multipart body.

    Returns the QC verdict with reasons, the pneumonia probability, the flag (urgent/routine),
    the threshold, the model, timings, and links to the SR and Secondary Capture
    (`?include=sr,sc` embeds them, base64). A rejected instance has no probability."""
    request.state.audit_patient_ids = []
    include = {part.strip() for part in request.query_params.get("include", "").split(",") if part}
    unknown = include - set(OBJECT_KINDS)
    if unknown:
        return error(400, "bad-include", f"include takes sr and/or sc; got {sorted(unknown)}")
    try:
        body = await read_body(request, request.app.state.pipeline.limits.max_bytes)
        payloads, multipart = instances(body, request.headers.get("content-type", ""))
    except DicomRejection as rejection:
        return error(rejection.http_status, rejection.code, rejection.message)
    if not payloads:
        return error(400, "no-instances", "the multipart body holds no parts")
    answers = [await triage_one(request, data, include) for data in payloads]
    if not multipart:
        status, body = answers[0]
        return JSONResponse(body, status_code=status)
    return JSONResponse({"results": [{"status": status, **body} for status, body in answers]})


async def result_summary(request: Request, result_id: str) -> Response:
    """GET /v1/imaging/results/{id}: the stored JSON answer of a triage."""
    return await result_object(request, result_id, "json")


async def result_object(request: Request, result_id: str, kind: str) -> Response:
    """GET /v1/imaging/results/{id}/{sr|sc|json}: a stored result object."""
    store = request.app.state.results
    if store.is_pending(result_id) and kind in OBJECT_KINDS:
        if not await request.app.state.later.wait(result_id):
            return JSONResponse({"error": "not-ready", "reason": "the result's SR and Secondary "
                                 "Capture are still being built; retry shortly"},
                                status_code=503, headers={"Retry-After": "5"})
    data = store.read(result_id, kind)
    if data is None:
        return error(404, "not-found", "no such result (or object kind: sr, sc, json)")
    return Response(data, media_type="application/json" if kind == "json" else DICOM_TYPE)
