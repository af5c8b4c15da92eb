"""A transparent patient risk score: GerontoNet ADR score plus the interaction-severity burden.

GerontoNet (Onder G et al., Arch Intern Med 2010;170(13):1142-1148; AUROC 0.71 development,
0.70 validation) predicts adverse drug reactions in older inpatients from six components. The
burden is the project's own count of interaction alerts weighted by severity, reported beside
it, not folded into it, so the published score stays the published score.
"""

from __future__ import annotations

from dataclasses import dataclass

from clinassist.serving.medication.alerts import Alert, AlertType
from clinassist.serving.medication.patient import Patient
from clinassist.serving.medication.severity import Severity
from clinassist.serving.medication.text import fold

REFERENCE = ("Onder G, Petrovic M, Tangiisuran B, et al. Development and validation of a score "
             "to assess risk of adverse drug reactions among in-hospital patients 65 years or "
             "older: the GerontoNet ADR risk score. Arch Intern Med 2010;170(13):1142-1148.")
HEART_FAILURE = ("heart failure", "cardiac failure", "insuffisance cardiaque")
LIVER_DISEASE = ("liver", "hepatic", "hepatitis", "cirrhosis", "hepatique", "cirrhose")
BURDEN_WEIGHTS = {Severity.CONTRAINDICATED: 3, Severity.MAJOR: 2, Severity.MODERATE: 1,
                  Severity.MINOR: 0}


@dataclass(frozen=True)
class Component:
    name: str
    value: object  # what the input said
    points: int
    known: bool = True  # False: the input did not say, scored 0

    def to_json(self) -> dict:
        return {"name": self.name, "value": self.value, "points": self.points,
                "known": self.known}


def mentions(conditions: tuple[str, ...], terms: tuple[str, ...]) -> bool:
    return any(term in fold(condition) for condition in conditions for term in terms)


def drug_points(count: int) -> int:
    return 0 if count < 5 else 1 if count <= 7 else 4


def gerontonet(patient: Patient, drug_count: int) -> list[Component]:
    conditions = patient.conditions
    return [
        Component(">=4 conditions", len(conditions), 1 if len(conditions) >= 4 else 0),
        Component("heart failure", mentions(conditions, HEART_FAILURE),
                  1 if mentions(conditions, HEART_FAILURE) else 0),
        Component("liver disease", mentions(conditions, LIVER_DISEASE),
                  1 if mentions(conditions, LIVER_DISEASE) else 0),
        Component("number of drugs (<5: 0, 5-7: 1, >=8: 4)", drug_count, drug_points(drug_count)),
        Component("previous ADR", patient.previous_adr, 2 if patient.previous_adr else 0,
                  known=patient.previous_adr is not None),
        Component("renal failure (eGFR < 60)", patient.egfr,
                  1 if patient.egfr is not None and patient.egfr < 60 else 0,
                  known=patient.egfr is not None),
    ]


def risk_score(patient: Patient, drug_count: int, alerts: list[Alert]) -> dict:
    """The score, its components, and the interaction burden, for the response."""
    components = gerontonet(patient, drug_count)
    interactions = [a for a in alerts if a.type is AlertType.INTERACTION]
    counts = {s.label: sum(a.severity is s for a in interactions) for s in reversed(Severity)}
    return {
        "gerontonet": {
            "score": sum(c.points for c in components), "max": 10,
            "components": [c.to_json() for c in components],
            "note": "higher scores mean a higher risk of an adverse drug reaction; a "
                    "component the request did not state counts 0 (known: false)",
            "reference": REFERENCE},
        "interaction_burden": {
            "score": sum(BURDEN_WEIGHTS[a.severity] for a in interactions),
            "counts": counts,
            "weights": {s.label: w for s, w in BURDEN_WEIGHTS.items()},
            "basis": "clinassist: interaction alerts weighted by severity (not a published score)"},
    }
