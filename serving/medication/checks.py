"""The four checks over a resolved medication list: interactions, duplicates, renal, allergy."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Protocol

from clinassist.errors import ClinassistError
from clinassist.serving.medication.alerts import Alert, AlertType, Evidence
from clinassist.serving.medication.kb import Ingredient, KnowledgeBase, Rule
from clinassist.serving.medication.normalise import MedicationInput, Normaliser, ResolvedMedication
from clinassist.serving.medication.rules import AllergyGroup, RenalRule, allergy_groups, renal_rules
from clinassist.serving.medication.severity import Severity
from clinassist.serving.medication.text import fold

KB_EVIDENCE = "knowledge-base"
# ATC groups of local preparations (mouth, skin, gynaecological, topical musculoskeletal, nose,
# throat, eye and ear): a drug that also exists as a cream or drops is not duplicate systemic
# therapy, so these classes do not count.
LOCAL_ATC_GROUPS = ("A01", "D", "G01", "G02", "M02", "R01", "R02", "S")
PROJECT_RULES = "clinassist rule table"


@dataclass(frozen=True)
class Prediction:
    severity: Severity
    confidence: float
    text: str
    model: str  # name and version


class InteractionPredictor(Protocol):
    """The seam for an interaction model: asked only about pairs the KB has no rule for."""

    def predict(self, a: Ingredient, b: Ingredient) -> Prediction | None: ...


def pairs(medications: list[ResolvedMedication]
          ) -> Iterator[tuple[ResolvedMedication, ResolvedMedication, Ingredient, Ingredient]]:
    """Every ingredient pair drawn from two different medications."""
    for first, second in itertools.combinations(medications, 2):
        for a, b in itertools.product(first.ingredients, second.ingredients):
            yield first, second, a, b


class Checker:
    """The checks, with the project's rule tables resolved against one knowledge base."""

    def __init__(self, kb: KnowledgeBase, normaliser: Normaliser,
                 predictor: InteractionPredictor | None = None) -> None:
        self.kb = kb
        self.normaliser = normaliser
        self.predictor = predictor
        self.renal_rules = self._resolve_renal_rules(renal_rules())
        self.groups = allergy_groups()
        self.group_by_alias = {fold(alias): g for g in self.groups for alias in g.aliases}

    def _resolve_renal_rules(self, rules: list[RenalRule]) -> dict[int, RenalRule]:
        by_ingredient = {}
        for rule in rules:
            found = self.normaliser.lookup(fold(rule.drug))
            if len(found) != 1:
                raise ClinassistError(f"rules/renal.yaml: {rule.drug!r} names {len(found)} "
                                      "ingredients in the knowledge base; use its generic name")
            by_ingredient[found[0].id] = rule
        return by_ingredient

    def interactions(self, medications: list[ResolvedMedication]) -> list[Alert]:
        alerts, reported = [], set()
        for first, second, a, b in pairs(medications):
            if a.id == b.id:
                continue  # the duplicate check reports it
            rules = self.kb.rules(a.id, b.id)
            if not rules:
                if self.predictor and (prediction := self.predictor.predict(a, b)):
                    alerts.append(Alert(
                        prediction.severity, AlertType.INTERACTION, (first.label, second.label),
                        (a.name, b.name),
                        Evidence("predicted", prediction.model, prediction.confidence),
                        f"{a.name} + {b.name}: {prediction.text}"))
            elif (id(first), id(second), rules[0].id) not in reported:
                # one alert per product pair and rule: piperacillin/tazobactam is one product
                reported.add((id(first), id(second), rules[0].id))
                alerts.append(interaction_alert(first, second, a, b, rules[0], len(rules)))
        return alerts

    def duplicates(self, medications: list[ResolvedMedication]) -> list[Alert]:
        alerts = []
        for first, second in itertools.combinations(medications, 2):
            shared = {i.id for i in first.ingredients} & {i.id for i in second.ingredients}
            if shared:
                names = sorted(i.name for i in first.ingredients if i.id in shared)
                alerts.append(Alert(
                    Severity.MAJOR, AlertType.DUPLICATE, (first.label, second.label),
                    tuple(names), Evidence(KB_EVIDENCE, "ingredient identity"),
                    f"{first.label} and {second.label} both contain {', '.join(names)}: "
                    "risk of a double dose."))
            elif classes := sorted(self._atc4(first) & self._atc4(second)):
                described = ", ".join(f"{code} {self.kb.atc_name(code) or ''}".strip()
                                      for code in classes)
                alerts.append(Alert(
                    Severity.MODERATE, AlertType.DUPLICATE, (first.label, second.label),
                    (ingredient_names(first), ingredient_names(second)),
                    Evidence(KB_EVIDENCE, "WHO ATC classification"),
                    f"{first.label} and {second.label} share ATC class {described}: "
                    "check the duplicate therapy is intended.", {"atc_classes": classes}))
        return alerts

    def _atc4(self, medication: ResolvedMedication) -> set[str]:
        return {code[:5] for i in medication.ingredients for code in self.kb.atc_codes(i.id)
                if not code.startswith(LOCAL_ATC_GROUPS)}

    def renal(self, medications: list[ResolvedMedication], egfr: float | None) -> list[Alert]:
        if egfr is None:
            return []
        alerts = []
        for medication in medications:
            for ingredient in medication.ingredients:
                rule = self.renal_rules.get(ingredient.id)
                tier = rule.fired(egfr) if rule else None
                if rule and tier:
                    proxy = (" The source's cut-off is creatinine clearance; eGFR is used as its "
                             "proxy.") if rule.measure == "CrCl" else ""
                    alerts.append(Alert(
                        tier.severity, AlertType.RENAL, (medication.label,), (ingredient.name,),
                        Evidence(KB_EVIDENCE, f"{PROJECT_RULES}: {rule.source}"),
                        f"{ingredient.name} at eGFR {egfr:g}: {tier.text}{proxy}",
                        {"threshold": tier.below, "measure": rule.measure}))
        return alerts

    def allergies(self, medications: list[ResolvedMedication],
                  allergies: tuple[str, ...]) -> tuple[list[Alert], list[str]]:
        """Alerts, and the allergies naming no drug or drug class (food, latex, ...)."""
        alerts, unchecked = [], []
        for allergy in allergies:
            allergens, groups = self._allergens(allergy)
            if not allergens and not groups:
                unchecked.append(allergy)
                continue
            for medication in medications:
                alert = self._allergy_alert(allergy, allergens, groups, medication)
                if alert:
                    alerts.append(alert)
        return alerts, unchecked

    def _allergens(self, allergy: str) -> tuple[set[int], list[AllergyGroup]]:
        """The ingredients an allergy names, and the classes it extends to."""
        if group := self.group_by_alias.get(fold(allergy)):
            return set(), [group]
        resolved = self.normaliser.resolve(MedicationInput(name=allergy))
        if not resolved:
            return set(), []
        codes = [code for i in resolved.ingredients for code in self.kb.atc_codes(i.id)]
        return {i.id for i in resolved.ingredients}, [g for g in self.groups if g.covers(codes)]

    def _allergy_alert(self, allergy: str, allergens: set[int], groups: list[AllergyGroup],
                       medication: ResolvedMedication) -> Alert | None:
        for ingredient in medication.ingredients:
            if ingredient.id in allergens:
                return Alert(Severity.CONTRAINDICATED, AlertType.ALLERGY, (medication.label,),
                             (ingredient.name,), Evidence(KB_EVIDENCE, "patient allergy list"),
                             f"Documented allergy to {allergy}: {medication.label} contains "
                             f"{ingredient.name}.", {"allergy": allergy, "match": "ingredient"})
            codes = self.kb.atc_codes(ingredient.id)
            for group in groups:
                if group.covers(codes):
                    return Alert(Severity.MAJOR, AlertType.ALLERGY, (medication.label,),
                                 (ingredient.name,),
                                 Evidence(KB_EVIDENCE, f"{PROJECT_RULES}: {group.source}"),
                                 f"Documented allergy to {allergy}: {ingredient.name} belongs to "
                                 f"the same class ({group.name}).",
                                 {"allergy": allergy, "match": "class", "class": group.name})
        return None


def ingredient_names(medication: ResolvedMedication) -> str:
    return " + ".join(i.name for i in medication.ingredients)


def interaction_alert(first: ResolvedMedication, second: ResolvedMedication, a: Ingredient,
                      b: Ingredient, rule: Rule, matching_rules: int) -> Alert:
    """One alert per ingredient pair, from its most severe (then most specific) rule."""
    labels = " / ".join(dict.fromkeys(level["label"] for level in rule.levels))
    conditional = " (severity depends on dose and history: see levels)" \
        if len(rule.levels) > 1 else ""
    scope = "" if rule.specificity == 4 else f" Class-level rule: {rule.main} + {rule.plus}."
    return Alert(
        rule.severity, AlertType.INTERACTION, (first.label, second.label), (a.name, b.name),
        Evidence(KB_EVIDENCE, rule.source),
        f"{a.name} + {b.name}: {labels}{conditional}.{scope}",
        {"mechanism": rule.mechanism, "management": rule.management, "language": rule.language,
         "levels": rule.levels, "rule": {"id": rule.id, "main": rule.main, "plus": rule.plus},
         "other_rules": matching_rules - 1})
