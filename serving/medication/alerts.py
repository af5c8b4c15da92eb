"""What the checks return: typed alerts, sorted most severe first."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from clinassist.serving.medication.severity import UNKNOWN, UNKNOWN_TIER, Severity

KNOWLEDGE_BASE = "knowledge-base"
PREDICTED = "predicted"
PREDICTED_LABEL = "model prediction, not in the knowledge base"


class AlertType(StrEnum):
    INTERACTION = "interaction"
    DUPLICATE = "duplicate"
    RENAL = "renal"
    ALLERGY = "allergy"


@dataclass(frozen=True)
class Evidence:
    """`knowledge-base` (a fact from a named source) or `predicted` (a model, with its
    calibrated P(interaction) as `confidence`)."""

    kind: str
    source: str
    confidence: float | None = None

    def to_json(self) -> dict:
        body: dict = {"kind": self.kind, "source": self.source}
        if self.kind == PREDICTED:
            body["label"] = PREDICTED_LABEL
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

    @property
    def predicted(self) -> bool:
        return self.evidence.kind == PREDICTED

    def to_json(self) -> dict:
        tier = UNKNOWN_TIER if self.predicted else self.severity
        return {"severity": UNKNOWN if self.predicted else self.severity.label,
                "fhir_severity": tier.fhir, "cds_indicator": tier.cds_indicator,
                "type": self.type.value,
                "drugs": list(self.drugs), "ingredients": list(self.ingredients),
                "evidence": self.evidence.to_json(), "text": self.text, **self.details}


TYPE_ORDER = list(AlertType)


def ranked(alerts: list[Alert]) -> list[Alert]:
    """Knowledge-base alerts before model predictions; most severe first; then interaction,
    duplicate, renal, allergy; then by drugs (predictions by P(interaction) first)."""
    return sorted(alerts, key=lambda a: (a.predicted, -a.severity, -(a.evidence.confidence or 0),
                                         TYPE_ORDER.index(a.type), a.drugs))
