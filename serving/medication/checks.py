"""The four checks over a resolved medication list: interactions, duplicates, renal, allergy."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from clinassist.errors import ClinassistError
from clinassist.serving.medication.alerts import (
    KNOWLEDGE_BASE,
    PREDICTED,
    PREDICTED_LABEL,
    Alert,
    AlertType,
    Evidence,
)
from clinassist.serving.medication.kb import Ingredient, KnowledgeBase, Rule
from clinassist.serving.medication.normalise import MedicationInput, Normaliser, ResolvedMedication
from clinassist.serving.medication.rules import AllergyGroup, RenalRule, allergy_groups, renal_rules
from clinassist.serving.medication.severity import Severity
from clinassist.serving.medication.text import fold

# ATC groups of local preparations (mouth, skin, gynaecological, topical musculoskeletal, nose,
# throat, eye and ear): a drug that also exists as a cream or drops is not duplicate systemic
# therapy, so these classes do not count.
LOCAL_ATC_GROUPS = ("A01", "D", "G01", "G02", "M02", "R01", "R02", "S")
PROJECT_RULES = "clinassist rule table"


@dataclass(frozen=True)
class Analogue:
    """A known interacting pair from the model's training data that resembles the pair asked
    about: `similarity` is the lower of the two drugs' structural similarities."""

    first: str
    second: str
    similarity: float

    def to_json(self) -> dict:
        return {"drugs": [self.first, self.second], "similarity": self.similarity}


@dataclass(frozen=True)
class Prediction:
    """The model's answer for a pair the knowledge base is silent on."""

    p_interaction: float  # calibrated probability that the pair interacts
    effect: str  # the predicted type's sentence, with the two ingredients named
    type_probability: float  # calibrated probability of that type, given an interaction
    analogues: tuple[Analogue, ...]
    model: str  # name and version


class AbstentionReason(StrEnum):
    UNKNOWN_STRUCTURE = "unknown-structure"  # a drug the model has no structure for
    OUTSIDE_DOMAIN = "outside-applicability-domain"  # neither drug resembles a training drug
    BELOW_THRESHOLD = "below-threshold"  # P(interaction) under the false-alarm threshold


@dataclass(frozen=True)
class Abstention:
    """Why the model said nothing about a pair (reported only with `options.explain`)."""

    reason: AbstentionReason
    detail: str
    p_interaction: float | None = None


class InteractionPredictor(Protocol):
    """The seam for an interaction model: asked once per medication list, about the ingredient
    pairs the KB has no rule for, with one answer per pair in the same order."""

    def predict(self, pairs: list[tuple[Ingredient, Ingredient]]
                ) -> list[Prediction | Abstention]: ...


@dataclass(frozen=True)
class Withheld:
    """A pair the model was asked about and did not alert on."""

    drugs: tuple[str, str]
    ingredients: tuple[str, str]
    abstention: Abstention

    def to_json(self) -> dict:
        body = {"drugs": list(self.drugs), "ingredients": list(self.ingredients),
                "reason": self.abstention.reason.value, "detail": self.abstention.detail}
        if self.abstention.p_interaction is not None:
            body["p_interaction"] = self.abstention.p_interaction
        return body


@dataclass
class InteractionFindings:
    alerts: list[Alert]
    withheld: list[Withheld]  # the model's abstentions, for `options.explain`


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

    def interactions(self, medications: list[ResolvedMedication]) -> InteractionFindings:
        """Knowledge-base alerts, then the model's alerts for the pairs the KB is silent on
        (all asked in one call), and the pairs the model abstained on."""
        alerts, reported, silent = [], set(), []
        for first, second, a, b in pairs(medications):
            if a.id == b.id:
                continue  # the duplicate check reports it
            rules = self.kb.rules(a.id, b.id)
            if not rules:
                silent.append((first, second, a, b))
            elif (id(first), id(second), rules[0].id) not in reported:
                # one alert per product pair and rule: piperacillin/tazobactam is one product
                reported.add((id(first), id(second), rules[0].id))
                alerts.append(interaction_alert(first, second, a, b, rules[0], len(rules)))
        withheld = []
        if self.predictor and silent:
            answers = self.predictor.predict([(a, b) for _, _, a, b in silent])
            for (first, second, a, b), answer in zip(silent, answers, strict=True):
                if isinstance(answer, Prediction):
                    alerts.append(predicted_alert(first, second, a, b, answer))
                else:
                    withheld.append(Withheld((first.label, second.label), (a.name, b.name),
                                             answer))
        return InteractionFindings(alerts, withheld)

    def duplicates(self, medications: list[ResolvedMedication]) -> list[Alert]:
        alerts = []
        atc4 = [self._atc4(medication) for medication in medications]  # once each, not per pair
        for (first, first_classes), (second, second_classes) in itertools.combinations(
                zip(medications, atc4), 2):
            shared = {i.id for i in first.ingredients} & {i.id for i in second.ingredients}
            if shared:
                names = sorted(i.name for i in first.ingredients if i.id in shared)
                alerts.append(Alert(
                    Severity.MAJOR, AlertType.DUPLICATE, (first.label, second.label),
                    tuple(names), Evidence(KNOWLEDGE_BASE, "ingredient identity"),
                    f"{first.label} and {second.label} both contain {', '.join(names)}: "
                    "risk of a double dose."))
            elif classes := sorted(first_classes & second_classes):
                described = ", ".join(f"{code} {self.kb.atc_name(code) or ''}".strip()
                                      for code in classes)
                alerts.append(Alert(
                    Severity.MODERATE, AlertType.DUPLICATE, (first.label, second.label),
                    (ingredient_names(first), ingredient_names(second)),
                    Evidence(KNOWLEDGE_BASE, "WHO ATC classification"),
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
                        Evidence(KNOWLEDGE_BASE, f"{PROJECT_RULES}: {rule.source}"),
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
                             (ingredient.name,), Evidence(KNOWLEDGE_BASE, "patient allergy list"),
                             f"Documented allergy to {allergy}: {medication.label} contains "
                             f"{ingredient.name}.", {"allergy": allergy, "match": "ingredient"})
            codes = self.kb.atc_codes(ingredient.id)
            for group in groups:
                if group.covers(codes):
                    return Alert(Severity.MAJOR, AlertType.ALLERGY, (medication.label,),
                                 (ingredient.name,),
                                 Evidence(KNOWLEDGE_BASE, f"{PROJECT_RULES}: {group.source}"),
                                 f"Documented allergy to {allergy}: {ingredient.name} belongs to "
                                 f"the same class ({group.name}).",
                                 {"allergy": allergy, "match": "class", "class": group.name})
        return None


def ingredient_names(medication: ResolvedMedication) -> str:
    return " + ".join(i.name for i in medication.ingredients)


def predicted_alert(first: ResolvedMedication, second: ResolvedMedication, a: Ingredient,
                    b: Ingredient, prediction: Prediction) -> Alert:
    """A model prediction: its own evidence kind and label, severity unknown (ranked below
    every knowledge-base alert, tiered as minor at most)."""
    return Alert(
        Severity.MINOR, AlertType.INTERACTION, (first.label, second.label), (a.name, b.name),
        Evidence(PREDICTED, prediction.model, prediction.p_interaction),
        f"{a.name} + {b.name}: {PREDICTED_LABEL} (P(interaction) "
        f"{prediction.p_interaction:.2f}). Predicted effect: {prediction.effect}",
        {"prediction": {"label": PREDICTED_LABEL, "p_interaction": prediction.p_interaction,
                        "effect": prediction.effect,
                        "type_probability": prediction.type_probability,
                        "analogues": [x.to_json() for x in prediction.analogues]}})


def interaction_alert(first: ResolvedMedication, second: ResolvedMedication, a: Ingredient,
                      b: Ingredient, rule: Rule, matching_rules: int) -> Alert:
    """One alert per ingredient pair, from its most severe (then most specific) rule."""
    labels = " / ".join(dict.fromkeys(level["label"] for level in rule.levels))
    conditional = " (severity depends on dose and history: see levels)" \
        if len(rule.levels) > 1 else ""
    scope = "" if rule.specificity == 4 else f" Class-level rule: {rule.main} + {rule.plus}."
    return Alert(
        rule.severity, AlertType.INTERACTION, (first.label, second.label), (a.name, b.name),
        Evidence(KNOWLEDGE_BASE, rule.source),
        f"{a.name} + {b.name}: {labels}{conditional}.{scope}",
        {"mechanism": rule.mechanism, "management": rule.management, "language": rule.language,
         "levels": rule.levels, "rule": {"id": rule.id, "main": rule.main, "plus": rule.plus},
         "other_rules": matching_rules - 1})
