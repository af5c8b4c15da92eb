"""One medication review: resolve, check, score; the same answer for JSON, FHIR or CDS Hooks."""

from __future__ import annotations

import os

from clinassist.serving.medication.alerts import ranked
from clinassist.serving.medication.checks import Checker, InteractionPredictor
from clinassist.serving.medication.kb import KnowledgeBase
from clinassist.serving.medication.normalise import MedicationInput, Normaliser, ResolvedMedication
from clinassist.serving.medication.patient import Patient
from clinassist.serving.medication.risk_score import risk_score


class MedicationReview:
    """Built once per knowledge base; `run` is thread-safe."""

    def __init__(self, kb: KnowledgeBase, predictor: InteractionPredictor | None = None) -> None:
        self.kb = kb
        self.normaliser = Normaliser(kb)
        self.checker = Checker(kb, self.normaliser, predictor)

    def run(self, patient: Patient, medications: list[MedicationInput], *,
            strict: bool = True, explain: bool = False) -> dict:
        """Alerts (most severe first, model predictions last), risk score and KB provenance.
        `strict` raises `UnresolvedDrugs` for any unknown medication; otherwise they are
        listed in `unresolved` and the rest is reviewed. `explain` adds `model_abstentions`:
        the KB-silent pairs the interaction model said nothing about, and why."""
        if strict:
            resolved, unresolved = self.normaliser.resolve_all(medications), []
        else:
            resolved, unresolved = self.normaliser.partition(medications)
        allergy_alerts, unchecked = self.checker.allergies(resolved, patient.allergies)
        interactions = self.checker.interactions(resolved)
        alerts = ranked(interactions.alerts + self.checker.duplicates(resolved)
                        + self.checker.renal(resolved, patient.egfr) + allergy_alerts)
        result = {
            "alerts": [alert.to_json() for alert in alerts],
            "risk": risk_score(patient, len(medications), alerts),
            "medications": [medication_json(m) for m in resolved],
            "unresolved": unresolved,
            "unchecked_allergies": unchecked,
            "knowledge_base": self.provenance(),
        }
        if explain and self.checker.predictor:
            result["model_abstentions"] = [w.to_json() for w in interactions.withheld]
        return result

    def provenance(self) -> dict:
        return {"version": self.kb.version,
                "commercial_use": self.kb.meta["commercial_use"] == "true",
                "sources": [{key: source[key] for key in
                             ("id", "title", "licence", "commercial_use", "attribution")}
                            for source in self.kb.sources]}


def default_review() -> MedicationReview:
    """The KB at its default place (built if missing), with the DrugBank-86 interaction model
    for pairs the KB does not cover only when CLINASSIST_DDI_MODEL=1: the model is
    non-commercial (CC BY-NC 4.0) and names a type for nearly any pair, so it is opt-in."""
    predictor = None
    if os.environ.get("CLINASSIST_DDI_MODEL", "0") == "1":
        from clinassist.serving.medication.predictor import DrugBankPredictor

        predictor = DrugBankPredictor()
    return MedicationReview(KnowledgeBase.open(), predictor)


def medication_json(medication: ResolvedMedication) -> dict:
    return {"input": medication.label, "matched_by": medication.matched_by,
            "ingredients": [i.name for i in medication.ingredients]}
