"""Audit records as FHIR R4 AuditEvent resources (https://hl7.org/fhir/R4/auditevent.html)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clinassist.serving.security.roles import Permission

if TYPE_CHECKING:
    from clinassist.serving.security.audit import AuditRecord

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACTION_SYSTEM = "urn:clinassist:action"  # our permission names, or "METHOD path" when unrouted
OBSERVER = "clinassist"

# AuditEvent.action (C create, R read/view, U update, D delete, E execute) for each permission.
EVENT_ACTION = {
    Permission.IMAGING_TRIAGE: "E", Permission.IMAGING_RESULTS: "R",
    Permission.WORKLIST_READ: "R", Permission.MEDICATION_REVIEW: "E",
    Permission.CDS_INVOKE: "E", Permission.CDS_FEEDBACK: "C", Permission.MODELS_READ: "R",
    Permission.AUDIT_READ: "R", Permission.USERS_MANAGE: "U", Permission.GATEWAY_ADMIN: "E",
}


def audit_event(record: AuditRecord) -> dict[str, Any]:
    """One AuditEvent: type, action, outcome, the acting agent, this service, what was touched."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(record.id),
        "type": _event_type(record),
        "subtype": [_coding(ACTION_SYSTEM, record.action)],
        "recorded": record.recorded.isoformat(),
        "outcome": _outcome_code(record.outcome),
        "outcomeDesc": _outcome_text(record),
        "agent": [{"role": [{"text": record.role}], "who": {"display": record.actor},
                   "requestor": True}],
        "source": {"observer": {"display": OBSERVER},
                   "type": [_coding(SOURCE_TYPE, "4", "Application Server")]},
        "entity": [{"what": {"display": record.resource},
                    "type": _coding(ENTITY_TYPE, "2", "System Object")}]
        + [{"what": {"type": "Patient", "identifier": {"value": pseudonym}},
            "type": _coding(RESOURCE_TYPES, "Patient", "Patient"),
            "role": _coding(OBJECT_ROLE, "1", "Patient")} for pseudonym in record.patients],
    }
    if record.action in EVENT_ACTION:
        event["action"] = EVENT_ACTION[Permission(record.action)]
    return event


def collection_bundle(resources: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A Bundle of type "collection" holding `resources`."""
    return {"resourceType": "Bundle", "type": "collection",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "entry": [{"resource": resource} for resource in resources]}


def _event_type(record: AuditRecord) -> dict[str, str]:
    """DCM codes for refusals and security events; FHIR's "rest" for other service calls."""
    if record.outcome == "401":
        return _coding(DCM, "110114", "User Authentication")
    if record.outcome == "403":
        return _coding(DCM, "110113", "Security Alert")
    if record.action == Permission.AUDIT_READ:
        return _coding(DCM, "110101", "Audit Log Used")
    if record.action == Permission.USERS_MANAGE:
        return _coding(DCM, "110137", "User Security Attributes Changed")
    return _coding(AUDIT_EVENT_TYPE, "rest", "RESTful Operation")


def _outcome_code(outcome: str) -> str:
    """0 success, 4 minor failure (refused or bad request), 8 serious failure (server error)."""
    if outcome == "success" or (outcome.isdigit() and int(outcome) < 400):
        return "0"
    if outcome == "failure" or int(outcome) < 500:
        return "4"
    return "8"


def _outcome_text(record: AuditRecord) -> str:
    text = f"HTTP {record.outcome}" if record.outcome.isdigit() else record.outcome
    return f"{text}: {record.detail}" if record.detail else text


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code} | ({"display": display} if display else {})
