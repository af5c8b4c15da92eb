"""FHIR R4 in and out: a Bundle to a patient and medication list; alerts to DetectedIssue.

Bundles are validated with `fhir.resources` (its R4B models, identical to R4 for the resources
used here). Codings read: RxNorm and WHO ATC for medications, LOINC eGFR for renal function.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.detectedissue import DetectedIssue
from pydantic import ValidationError

from clinassist.serving.medication.errors import InvalidRequest
from clinassist.serving.medication.normalise import MedicationInput
from clinassist.serving.medication.patient import Patient

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
LOINC = "http://loinc.org"
EGFR_LOINC = {"33914-3", "62238-1", "98979-8", "48642-3", "48643-1", "50044-7", "88293-6",
              "88294-4", "69405-9"}
MEDICATION_TYPES = ("MedicationRequest", "MedicationStatement")
INACTIVE = {"inactive", "resolved", "remission", "refuted", "entered-in-error", "stopped",
            "cancelled", "completed", "revoked"}
# HL7 v3 ActCode detected-issue codes (the DetectedIssue.code example binding)
ISSUE_CODES = {"interaction": ("DRG", "Drug Interaction Alert"),
               "duplicate": ("DUPTHPY", "Duplicate Therapy Alert"),
               "renal": ("DOSECOND", "Dosage-Condition Alert"),
               "allergy": ("ALGY", "Allergy Alert")}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def _resource(kind: str, **properties: dict) -> dict:
    return {"type": "object", "required": ["resourceType"],
            "properties": {"resourceType": {"enum": [kind]}, "id": {"type": "string"},
                           **properties}}


_CODING = {"type": "object", "properties": {
    "system": {"enum": [RXNORM, ATC, LOINC, "http://snomed.info/sct"]},
    "code": {"type": "string"}, "display": {"type": "string"}}}
_CONCEPT = {"type": "object", "properties": {
    "text": {"type": "string"}, "coding": {"type": "array", "items": _CODING}}}
_STATUS = {"type": "string", "example": "active"}
_MEDICATION = {"status": _STATUS, "medicationCodeableConcept": _CONCEPT,
               "medicationReference": {"type": "object",
                                       "properties": {"reference": {"type": "string"}}},
               "subject": {"type": "object", "properties": {"reference": {"type": "string"}}}}
RESOURCE_SCHEMA = {"oneOf": [
    _resource("Patient", birthDate={"type": "string", "format": "date"},
              gender={"enum": ["female", "male", "other", "unknown"]}),
    _resource("MedicationRequest", intent={"enum": ["order", "proposal", "plan"]},
              **_MEDICATION),
    _resource("MedicationStatement", **_MEDICATION),
    _resource("Medication", code=_CONCEPT),
    _resource("Observation", status=_STATUS, code=_CONCEPT,
              effectiveDateTime={"type": "string", "format": "date-time"},
              valueQuantity={"type": "object", "properties": {"value": {"type": "number"},
                                                               "unit": {"type": "string"}}}),
    _resource("AllergyIntolerance", clinicalStatus=_CONCEPT, verificationStatus=_CONCEPT,
              code=_CONCEPT),
    _resource("Condition", clinicalStatus=_CONCEPT, verificationStatus=_CONCEPT, code=_CONCEPT),
]}
BUNDLE_SCHEMA = {  # what `read_bundle` reads, for /docs.json; fhir.resources validates the rest
    "type": "object", "required": ["resourceType", "type"],
    "properties": {"resourceType": {"enum": ["Bundle"]},
                   "type": {"enum": ["collection", "batch", "transaction", "searchset"]},
                   "entry": {"type": "array", "items": {"type": "object", "properties": {
                       "fullUrl": {"type": "string"}, "resource": RESOURCE_SCHEMA}}}}}


@dataclass(frozen=True)
class FhirInput:
    patient: Patient
    patient_reference: str | None
    medications: list[MedicationInput]
    references: list[str]  # one per medication: the resource the DetectedIssue implicates


def validated(payload: object) -> Bundle:
    _check_resource_types(payload)
    try:
        return Bundle.model_validate(payload)
    except ValidationError as invalid:
        problems = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
                    for e in invalid.errors()[:20]]
        raise InvalidRequest("not a valid FHIR R4 Bundle: " + "; ".join(
            f"{p['field']}: {p['problem']}" for p in problems[:5]), problems) from invalid


def _check_resource_types(payload: object) -> None:
    """Every `resourceType` in the payload names a FHIR R4 type (fhir.resources looks each one up
    before validating, and fails with a TypeError or KeyError on anything else)."""
    stack = [(payload, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, list):
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("resourceType")
        if "resourceType" in node and not (isinstance(kind, str) and _is_fhir_type(kind)):
            raise InvalidRequest(f"not a valid FHIR R4 Bundle: {where or 'the body'} has "
                                 f"resourceType {repr(kind)[:60]}, which is not a FHIR R4 type "
                                 "(Bundle, Patient, MedicationRequest, Observation, ...)")
        stack.extend((value, f"{where}.{key}".lstrip(".")) for key, value in node.items())


def _is_fhir_type(name: str) -> bool:
    try:
        get_fhir_model_class(name)
    except ValueError:
        return False
    return True


def reference_of(entry) -> str:
    """`Type/id` (as CDS Hooks selections name orders), else the entry's fullUrl."""
    resource = entry.resource
    return f"{resource.get_resource_type()}/{resource.id}" if resource.id else entry.fullUrl


def status_active(*statuses) -> bool:
    codes = {coding.code for status in statuses if status is not None
             for coding in getattr(status, "coding", None) or []}
    codes |= {status for status in statuses if isinstance(status, str)}
    return not codes & INACTIVE


def concept_text(concept) -> str | None:
    if concept is None:
        return None
    return concept.text or next((c.display for c in concept.coding or [] if c.display), None)


def medication_input(concept) -> MedicationInput:
    codes = {coding.system: coding.code for coding in concept.coding or []} if concept else {}
    return MedicationInput(name=concept_text(concept), rxnorm=codes.get(RXNORM),
                           atc=codes.get(ATC))


def read_bundle(payload: object, today: date | None = None) -> FhirInput:
    """Patient (age, sex), active medications, the latest eGFR, active allergies and conditions."""
    bundle = validated(payload)
    entries = [entry for entry in bundle.entry or [] if entry.resource is not None]
    by_reference = {reference_of(entry): entry.resource for entry in entries}
    patient_entry = next((e for e in entries if e.resource.get_resource_type() == "Patient"), None)
    medications, references, egfr, allergies, conditions = [], [], [], [], []
    for entry in entries:
        resource, kind = entry.resource, entry.resource.get_resource_type()
        if kind in MEDICATION_TYPES and status_active(resource.status):
            concept = resource.medicationCodeableConcept
            if concept is None and resource.medicationReference is not None:
                medication = by_reference.get(resource.medicationReference.reference)
                concept = getattr(medication, "code", None)
            medications.append(medication_input(concept))
            references.append(reference_of(entry))
        elif kind == "Observation" and status_active(resource.status) and any(
                c.system == LOINC and c.code in EGFR_LOINC for c in resource.code.coding or []):
            if resource.valueQuantity is not None and resource.valueQuantity.value is not None:
                egfr.append((str(resource.effectiveDateTime or ""),
                             float(resource.valueQuantity.value)))
        elif kind == "AllergyIntolerance" and status_active(resource.clinicalStatus,
                                                            resource.verificationStatus):
            if text := concept_text(resource.code):
                allergies.append(text)
        elif kind == "Condition" and status_active(resource.clinicalStatus,
                                                   resource.verificationStatus):
            if text := concept_text(resource.code):
                conditions.append(text)
    patient = Patient(age=age(patient_entry.resource.birthDate, today) if patient_entry else None,
                      sex=patient_entry.resource.gender if patient_entry else None,
                      egfr=max(egfr)[1] if egfr else None, allergies=tuple(allergies),
                      conditions=tuple(conditions))
    return FhirInput(patient, reference_of(patient_entry) if patient_entry else None,
                     medications, references)


def age(birth: date | None, today: date | None = None) -> int | None:
    if birth is None:
        return None
    today = today or date.today()
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def detected_issue(alert: dict, implicated: list[str], patient: str | None,
                   kb_version: str) -> dict:
    """One alert as a FHIR R4 DetectedIssue (validated), implicating the medications' resources."""
    code, display = ISSUE_CODES[alert["type"]]
    issue = {
        "resourceType": "DetectedIssue", "status": "final",
        "code": {"coding": [{"system": ACT_CODE, "code": code, "display": display}],
                 "text": alert["type"]},
        "severity": alert["fhir_severity"],
        "identifiedDateTime": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "implicated": [{"reference": reference} for reference in implicated],
        "detail": alert["text"],
        "evidence": [{"code": [{"text": text}]} for text in evidence_texts(alert, kb_version)],
    }
    if patient:
        issue["patient"] = {"reference": patient}
    return DetectedIssue.model_validate(issue).model_dump(mode="json", exclude_none=True)


def evidence_texts(alert: dict, kb_version: str) -> list[str]:
    """The source of a fact; for a model prediction its label, probabilities and the known
    interacting analogue pairs it rests on."""
    evidence = alert["evidence"]
    if "prediction" not in alert:
        return [f"{evidence['kind']}: {evidence['source']} (KB {kb_version})"]
    prediction = alert["prediction"]
    return [f"{evidence['kind']}: {evidence['source']}, {prediction['label']} (P(interaction) "
            f"{prediction['p_interaction']:.2f}; effect probability "
            f"{prediction['type_probability']:.2f}; KB {kb_version})",
            *(f"known interacting analogue from the training data: {' + '.join(a['drugs'])} "
              f"(similarity {a['similarity']:.2f})" for a in prediction["analogues"])]


def issues_bundle(result: dict, fhir_input: FhirInput) -> dict:
    """The review as a collection Bundle of DetectedIssue, tagged with the KB version."""
    reference_by_label: dict[str, list[str]] = {}
    for medication, reference in zip(fhir_input.medications, fhir_input.references):
        reference_by_label.setdefault(medication.label, []).append(reference)
    version = result["knowledge_base"]["version"]
    issues = [detected_issue(alert, [r for label in alert["drugs"]
                                     for r in reference_by_label.get(label, [])],
                             fhir_input.patient_reference, version)
              for alert in result["alerts"]]
    entries = [{"resource": issue} for issue in issues]
    if result["unresolved"]:
        entries.append({"resource": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "warning", "code": "not-found",
             "diagnostics": f"medication not found, not reviewed: {u['input']}; closest: "
                            f"{', '.join(u['suggestions']) or 'none'}"}
            for u in result["unresolved"]]}})
    return {"resourceType": "Bundle", "type": "collection",
            "meta": {"tag": [{"system": "urn:clinassist:kb-version", "code": version}]},
            "entry": entries}
