"""CDS Hooks 2.0 for medication orders: discovery, `order-select` / `order-sign` cards, policy.

Cards are tiered by severity (CDS Hooks `indicator`), only alerts involving a draft order are
shown (the current list was reviewed when it was ordered), and alerts below the policy's
minimum severity are suppressed: clinicians override most interaction alerts, so a card
must be worth reading. https://cds-hooks.hl7.org/2.0/
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from clinassist.serving.medication.fhir import FhirInput
from clinassist.serving.medication.severity import Severity, tier_of

SERVICES = {"clinassist-medication-order-select": "order-select",
            "clinassist-medication-order-sign": "order-sign"}
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
    "egfr": "Observation?patient={{context.patientId}}&code=http://loinc.org|33914-3,"
            "http://loinc.org|62238-1,http://loinc.org|98979-8&_sort=-date&_count=1",
    "allergies": "AllergyIntolerance?patient={{context.patientId}}&clinical-status=active",
    "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
}
OVERRIDE_REASONS = [
    {"code": "benefit-outweighs-risk", "system": "urn:clinassist:cds-override",
     "display": "Benefit outweighs the risk"},
    {"code": "patient-monitored", "system": "urn:clinassist:cds-override",
     "display": "Patient will be monitored"},
    {"code": "already-tolerated", "system": "urn:clinassist:cds-override",
     "display": "Patient already takes this combination without problems"},
    {"code": "not-applicable", "system": "urn:clinassist:cds-override",
     "display": "Alert does not apply to this patient"},
]
SUMMARY_LIMIT = 140  # CDS Hooks: Card.summary SHALL be under 140 characters


@dataclass(frozen=True)
class CardPolicy:
    """Which alerts become cards: `CLINASSIST_CDS_MIN_SEVERITY` (default moderate)."""

    min_severity: Severity = Severity.MODERATE

    @classmethod
    def from_env(cls) -> CardPolicy:
        return cls(Severity.parse(os.environ.get("CLINASSIST_CDS_MIN_SEVERITY", "moderate")))


class HookRequest(BaseModel):
    """The parts of a CDS Hooks request this service reads (others are allowed and ignored)."""

    model_config = ConfigDict(extra="allow")
    hook: str
    hookInstance: str = Field(min_length=1)
    context: dict
    prefetch: dict | None = None


def discovery() -> dict:
    return {"services": [
        {"hook": hook, "id": service, "title": f"clinassist medication review ({hook})",
         "description": "Drug interactions (ANSM thesaurus), duplicate therapy, renal dosing "
                        "and allergy checks on draft medication orders, tiered by severity.",
         "prefetch": PREFETCH, "usageRequirements": "Sign with a JWT from a trusted issuer."}
        for service, hook in SERVICES.items()]}


def hook_bundle(request: HookRequest) -> tuple[dict, set[str]]:
    """One FHIR Bundle of the draft orders and every prefetched resource, and the draft
    orders' references (for `order-select`, only the selected ones)."""
    drafts = (request.context.get("draftOrders") or {}).get("entry") or []
    entries = list(drafts)
    for value in (request.prefetch or {}).values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            entries += value.get("entry") or []
        elif isinstance(value, dict) and "resourceType" in value:
            entries.append({"resource": value})
    references = {f"{e['resource']['resourceType']}/{e['resource'].get('id')}" for e in drafts
                  if isinstance(e, dict) and isinstance(e.get("resource"), dict)}
    selections = request.context.get("selections")
    if request.hook == "order-select" and selections:
        references &= set(selections)
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}, references


def cards(result: dict, fhir_input: FhirInput, drafts: set[str],
          policy: CardPolicy) -> list[tuple[dict | None, dict]]:
    """(alert, card) for each alert worth showing, most severe first, then one info card
    (alert None) naming the medications that could not be checked."""
    label_refs: dict[str, set[str]] = {}
    for medication, reference in zip(fhir_input.medications, fhir_input.references):
        label_refs.setdefault(medication.label, set()).add(reference)
    shown: list[tuple[dict | None, dict]] = []
    for alert in result["alerts"]:
        involved = {r for label in alert["drugs"] for r in label_refs.get(label, ())} & drafts
        if involved and tier_of(alert["severity"]) >= policy.min_severity:
            shown.append((alert, alert_card(alert, sorted(involved), result)))
    if result["unresolved"]:
        names = ", ".join(u["input"] for u in result["unresolved"])
        shown.append((None, {
            "uuid": str(uuid.uuid4()), "indicator": "info",
            "summary": truncate(f"Not checked (unknown to the knowledge base): {names}"),
            "detail": "These medications matched nothing in the knowledge base and were not "
                      "checked for interactions, duplicates, renal dosing or allergy.",
            "source": source(result)}))
    return shown


def alert_card(alert: dict, drafts: list[str], result: dict) -> dict:
    suggestions = [{"label": f"Cancel draft order {reference}", "uuid": str(uuid.uuid4()),
                    "actions": [{"type": "delete", "description": f"Cancel {reference}",
                                 "resourceId": [reference]}]} for reference in drafts]
    return {
        "uuid": str(uuid.uuid4()),
        "summary": truncate(summary(alert)),
        "indicator": alert["cds_indicator"],
        "detail": markdown(alert),
        "source": source(result),
        "suggestions": suggestions,
        "selectionBehavior": "at-most-one",
        "overrideReasons": OVERRIDE_REASONS,
    }


def summary(alert: dict) -> str:
    names = " + ".join(alert["ingredients"])
    if "prediction" in alert:
        return (f"Possible interaction {names} (model prediction, not in the knowledge base; "
                f"P {alert['prediction']['p_interaction']:.2f})")
    return f"{alert['severity'].capitalize()} {alert['type']}: {names}"


def source(result: dict) -> dict:
    kb = result["knowledge_base"]
    return {"label": f"clinassist medication review (KB {kb['version']})",
            "topic": {"system": "urn:clinassist:kb-sources",
                      "code": "+".join(s["id"] for s in kb["sources"])}}


def markdown(alert: dict) -> str:
    lines = [alert["text"], "", f"**Source:** {alert['evidence']['source']}"]
    if prediction := alert.get("prediction"):
        lines.append(f"**{prediction['label'].capitalize()}.** P(interaction) "
                     f"{prediction['p_interaction']:.2f}; probability of this effect "
                     f"{prediction['type_probability']:.2f}. Severity unknown.")
        lines += [f"- known interacting analogue: {' + '.join(a['drugs'])} (similarity "
                  f"{a['similarity']:.2f})" for a in prediction["analogues"]]
    if alert.get("mechanism"):
        lines.append(f"**Mécanisme ({alert['language']}):** {alert['mechanism']}")
    if alert.get("management"):
        lines.append(f"**Conduite à tenir ({alert['language']}):** {alert['management']}")
    return "\n\n".join(lines)


def truncate(text: str) -> str:
    return text if len(text) < SUMMARY_LIMIT else text[:SUMMARY_LIMIT - 2] + "…"
