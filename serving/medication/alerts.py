"""What the checks return: typed alerts, sorted most severe first."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from clinassist.serving.medication.severity import Severity


class AlertType(StrEnum):
    INTERACTION = "interaction"
    DUPLICATE = "duplicate"
    RENAL = "renal"
    ALLERGY = "allergy"


@dataclass(frozen=True)
class Evidence:
    """`knowledge-base` (a fact from a named source) or `predicted` (a model, with confidence)."""

    kind: str
    source: str
    confidence: float | None = None

    def to_json(self) -> dict:
        body: dict = {"kind": self.kind, "source": self.source}
        if self.confidence is not None:
            body["confidence"] = self.confidence
        return body


@dataclass(frozen=True)
class Alert:
    severity: Severity
    type: AlertType
    drugs: tuple[str, ...]  # the medications as the caller named them
    ingredients: tuple[str, ...]
    evidence: Evidence
    text: str  # English
    details: dict = field(default_factory=dict)  # source text (language given), rule ids

    def to_json(self) -> dict:
        return {"severity": self.severity.label, "fhir_severity": self.severity.fhir,
                "cds_indicator": self.severity.cds_indicator, "type": self.type.value,
                "drugs": list(self.drugs), "ingredients": list(self.ingredients),
                "evidence": self.evidence.to_json(), "text": self.text, **self.details}


TYPE_ORDER = list(AlertType)


def ranked(alerts: list[Alert]) -> list[Alert]:
    """Most severe first; then interaction, duplicate, renal, allergy; then by drugs."""
    return sorted(alerts, key=lambda a: (-a.severity, TYPE_ORDER.index(a.type), a.drugs))
