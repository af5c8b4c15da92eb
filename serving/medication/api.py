"""`POST /v1/medication/risk`: the pharmacist's JSON API (mounted at /v1 by `serving.service`).

The handler validates, delegates to `MedicationReview` in a worker thread, and translates
errors; the knowledge base is built on first use when `$CLINASSIST_HOME/kb.sqlite` is missing.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from clinassist.errors import ClinassistError
from clinassist.serving.http_body import BodyTooLarge, parse_json, read_capped
from clinassist.serving.medication import fhir
from clinassist.serving.medication.errors import (
    InvalidRequest,
    KnowledgeBaseUnavailable,
    MedicationError,
    NotJson,
    TooLarge,
)
from clinassist.serving.medication.normalise import MedicationInput
from clinassist.serving.medication.patient import Patient
from clinassist.serving.medication.review import MedicationReview, default_review

MAX_BODY_BYTES = 1_000_000
PERMISSION = "medication:review"
FHIR_JSON = "application/fhir+json"


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    age: int | None = Field(None, ge=0, le=130)
    sex: Literal["female", "male", "other", "unknown"] | None = None
    egfr: float | None = Field(None, ge=0, le=250, description="mL/min/1.73 m2")
    allergies: list[str] = Field(default_factory=list, max_length=100)
    conditions: list[str] = Field(default_factory=list, max_length=200)
    previous_adr: bool | None = Field(None, description="a previous adverse drug reaction")

    def domain(self) -> Patient:
        return Patient(self.age, self.sex, self.egfr, tuple(self.allergies),
                       tuple(self.conditions), self.previous_adr)


class MedicationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={  # what named_or_coded checks
        "anyOf": [{"required": [key]} for key in ("name", "rxnorm", "atc")]})
    name: str | None = Field(None, min_length=1, max_length=300)
    rxnorm: str | None = Field(None, pattern=r"^\d{1,10}$")
    atc: str | None = Field(None, pattern=r"^[A-Za-z]\d\d[A-Za-z]{2}\d\d$",
                            description="a level-5 (substance) code")
    dose: str | None = Field(None, max_length=100)
    route: str | None = Field(None, max_length=100)

    @model_validator(mode="after")
    def named_or_coded(self) -> MedicationIn:
        if not (self.name or self.rxnorm or self.atc):
            raise ValueError("give at least one of name, rxnorm or atc")
        return self

    def domain(self) -> MedicationInput:
        return MedicationInput(self.name, self.rxnorm, self.atc)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unresolved: Literal["error", "report"] = Field(
        "error", description="error: 422 listing unknown drugs; report: review the rest and "
                             "list them in `unresolved`")
    explain: bool = Field(
        False, description="with the interaction model on, list in `model_abstentions` each "
                           "pair the knowledge base is silent on that the model did not alert "
                           "on, and why (unknown structure, outside its domain, below threshold)")


class RiskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient: PatientIn = Field(default_factory=PatientIn)
    medications: list[MedicationIn] = Field(min_length=1, max_length=100)
    options: Options = Field(default_factory=Options)


def inline_schema(model: type[BaseModel]) -> dict:
    """The model's JSON schema with its `$defs` inlined, to embed in an OpenAPI operation."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        return [resolve(item) for item in node] if isinstance(node, list) else node

    return resolve(schema)


RISK_OPENAPI = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": inline_schema(RiskRequest)}}}}
FHIR_OPENAPI = {
    "parameters": [{"name": "unresolved", "in": "query", "required": False,
                    "schema": {"enum": ["error", "report"]},
                    "description": "report: review the rest when a medication is unknown"}],
    "requestBody": {"required": True, "content": {
        media: {"schema": fhir.BUNDLE_SCHEMA} for media in (FHIR_JSON, "application/json")}}}
ERRORS = {status: {"description": why} for status, why in (
    (400, "not JSON"), (401, "no or invalid bearer credential"),
    (403, "the caller's role lacks medication:review"), (413, "body over 1 MB"),
    (422, "invalid request shape, or medications not found (with suggestions)"),
    (503, "the knowledge base is missing and cannot be built"))}

# A process's reviews run one after another on one thread: the knowledge base's SQLite releases
# the GIL at every statement, and reviews on threads of their own passed it back and forth so
# often that two at once cost twice the CPU each (in process: 1,544 reviews/s on one thread,
# 789/s on two).
REVIEWS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medication-review")


async def reviewed(request: Request, patient: Patient, medications: list[MedicationInput],
                   **options: bool) -> dict:
    """`MedicationReview.run` of the app's review (see `shared_review`), on REVIEWS."""
    def review() -> dict:
        return shared_review(request).run(patient, medications, **options)

    return await asyncio.get_running_loop().run_in_executor(REVIEWS, review)


def shared_review(request: Request) -> MedicationReview:
    """The app's review service, opened (and the KB built, if missing) on first use; called on
    REVIEWS only, so never by two threads at once."""
    if getattr(request.app.state, "medication_review", None) is None:
        try:
            request.app.state.medication_review = default_review()
        except ClinassistError as missing:
            raise KnowledgeBaseUnavailable(f"{missing}; or run `clinassist kb build`") \
                from missing
    return request.app.state.medication_review


async def read_json(request: Request) -> object:
    """The JSON body, refused with 413 past MAX_BODY_BYTES."""
    try:
        body = await read_capped(request, MAX_BODY_BYTES)
    except BodyTooLarge as too_large:
        raise TooLarge(f"{too_large}; review a ward as several requests") from too_large
    try:
        return parse_json(body)
    except ValueError as bad:
        raise NotJson(f"the body is not JSON ({bad}); send application/json") from bad


async def parse(request: Request) -> RiskRequest:
    try:
        return RiskRequest.model_validate(await read_json(request))
    except ValidationError as invalid:
        problems = [{"field": ".".join(str(part) for part in e["loc"]), "problem": e["msg"]}
                    for e in invalid.errors()]
        raise InvalidRequest("; ".join(f"{p['field'] or 'body'}: {p['problem']}"
                                       for p in problems)
                             + ". See the request schema in /docs.json.", problems) from invalid


async def medication_risk(request: Request) -> JSONResponse:
    """Alerts sorted by severity (interactions, duplicate therapy, renal, allergy), the
    patient risk score with its components, and the knowledge-base version and sources."""
    request.state.audit_patient_ids = []  # the JSON request carries no patient identifier
    try:
        body = await parse(request)
        result = await reviewed(request, body.patient.domain(),
                                [m.domain() for m in body.medications],
                                strict=body.options.unresolved == "error",
                                explain=body.options.explain)
    except MedicationError as problem:
        return JSONResponse(problem.body(), status_code=problem.http_status)
    return JSONResponse(result)


async def medication_risk_fhir(request: Request) -> JSONResponse:
    """FHIR R4: a Bundle (Patient, MedicationRequest/MedicationStatement, eGFR Observation,
    AllergyIntolerance, Condition) in; a collection Bundle of DetectedIssue out.
    `?unresolved=report` reviews the rest when a medication is unknown, and adds an
    OperationOutcome listing it."""
    request.state.audit_patient_ids = []
    report = request.query_params.get("unresolved", "error") == "report"
    try:
        fhir_input = fhir.read_bundle(await read_json(request))
        if fhir_input.patient_reference:
            request.state.audit_patient_ids = [fhir_input.patient_reference]
        result = await reviewed(request, fhir_input.patient, fhir_input.medications,
                                strict=not report)
    except MedicationError as problem:
        return JSONResponse(problem.body(), status_code=problem.http_status)
    bundle = fhir.issues_bundle(result, fhir_input)
    return JSONResponse(bundle, media_type=FHIR_JSON)
