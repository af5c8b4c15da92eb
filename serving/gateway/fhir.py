"""A triage result as a FHIR R4 DiagnosticReport on its ImagingStudy, for webhooks.

https://hl7.org/fhir/R4/diagnosticreport.html; the study is contained and identified by its
Study Instance UID (https://hl7.org/fhir/R4/imagingstudy.html, system urn:dicom:uid). The
study's worklist priority (never lowered) and the model's probability travel as extensions.
"""

from __future__ import annotations

from typing import Any

PRIORITY_EXTENSION = "urn:clinassist:fhir:StructureDefinition/triage-priority"
PROBABILITY_EXTENSION = "urn:clinassist:fhir:StructureDefinition/pneumonia-probability"
RADIOLOGY = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
             "display": "Radiology"}


def triage_report(summary: dict[str, Any], patient_id: str, priority: str) -> dict[str, Any]:
    """`summary` is the stored triage JSON (`ResultStore`); `priority` the study's."""
    subject = {"identifier": {"value": patient_id}}
    extensions = [{"url": PRIORITY_EXTENSION, "valueCode": priority}]
    if summary["probability"] is not None:
        extensions.append({"url": PROBABILITY_EXTENSION, "valueDecimal": summary["probability"]})
    return {
        "resourceType": "DiagnosticReport",
        "id": summary["id"],
        "extension": extensions,
        "status": "preliminary",
        "category": [{"coding": [RADIOLOGY]}],
        "code": {"text": "Chest radiograph pneumonia triage (AI, not for diagnosis)"},
        "subject": subject,
        "contained": [{"resourceType": "ImagingStudy", "id": "study", "status": "available",
                       "subject": subject, "identifier": [{
                           "system": "urn:dicom:uid",
                           "value": f"urn:oid:{summary['study_instance_uid']}"}]}],
        "imagingStudy": [{"reference": "#study"}],
        "conclusion": _conclusion(summary, priority),
    }


def _conclusion(summary: dict[str, Any], priority: str) -> str:
    if not summary["qc"]["passed"]:
        reasons = "; ".join(r["message"] for r in summary["qc"]["reasons"] if r["blocking"])
        return (f"Not scored: the image failed quality control ({reasons}). "
                f"Study priority {priority}.")
    return (f"Pneumonia probability {summary['probability']:.2f} (threshold "
            f"{summary['threshold']:.2f}): {summary['flag']}. Study priority {priority}.")
