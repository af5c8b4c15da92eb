"""Medication names and codes to ingredients, or an error listing every input that failed.

Accepted: generic, brand and synonym names (any case, accents, salt forms), RxNorm clinical-drug
names as EHRs send them ("Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG Oral Tablet"),
RxNorm ingredient codes and ATC level-5 codes. Combination products give all their ingredients.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from clinassist.serving.medication.errors import UnresolvedDrugs
from clinassist.serving.medication.kb import Ingredient, KnowledgeBase
from clinassist.serving.medication.text import fold, strip_salt

UNITS = r"(?:MG|MCG|G|ML|L|UNT|UNITS?|MEQ|MMOL|ACTUAT|HR|DAY|%)"
STRENGTH = re.compile(rf"\b\d[\d.]*\s*{UNITS}(?:\s*/\s*{UNITS})*(?![A-Z])", re.IGNORECASE)
PACKAGING = re.compile(r"\bNDA\d+\b|\babuse-deterrent\b|\[[^\]]*\]", re.IGNORECASE)
COMPONENT = re.compile(r"\s+/\s+|\s*\+\s*|(?<=[A-Za-z])/(?=[A-Za-z])")
DOSE_FORM_WORDS = frozenset("""oral tablet tablets capsule capsules solution suspension injection
injectable chewable extended release delayed topical cream inhaler inhalation metered dose dry
powder spray mucosal prefilled syringe auto injector pack day transdermal system drug implant
vaginal ring intrauterine per hr""".split())
ATC_LEVEL5 = re.compile(r"[A-Z]\d\d[A-Z][A-Z]\d\d")


@dataclass(frozen=True)
class MedicationInput:
    name: str | None = None
    rxnorm: str | None = None
    atc: str | None = None

    @property
    def label(self) -> str:
        return self.name or (f"RxNorm {self.rxnorm}" if self.rxnorm else f"ATC {self.atc}")


@dataclass(frozen=True)
class ResolvedMedication:
    input: MedicationInput
    ingredients: tuple[Ingredient, ...]
    matched_by: str  # rxnorm, atc or name

    @property
    def label(self) -> str:
        return self.input.label


class Normaliser:
    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    def partition(self, medications: list[MedicationInput]
                  ) -> tuple[list[ResolvedMedication], list[dict]]:
        """The medications resolved, and each failure with its index and suggestions."""
        resolved, failures = [], []
        for index, medication in enumerate(medications):
            found = self.resolve(medication)
            if found:
                resolved.append(found)
            else:
                failures.append({"index": index, "input": medication.label,
                                 "suggestions": self.suggest(medication.name or "")})
        return resolved, failures

    def resolve_all(self, medications: list[MedicationInput]) -> list[ResolvedMedication]:
        """Every medication resolved, or `UnresolvedDrugs` naming each failure."""
        resolved, failures = self.partition(medications)
        if failures:
            listed = "; ".join(f"{f['input']!r} (did you mean: "
                               f"{', '.join(f['suggestions']) or 'no close name'})"
                               for f in failures)
            raise UnresolvedDrugs(
                f"{len(failures)} medication(s) not found: {listed}. Send a generic name, brand, "
                "RxNorm ingredient code or ATC level-5 code.", failures)
        return resolved

    def resolve(self, medication: MedicationInput) -> ResolvedMedication | None:
        """Codes first (RxNorm, then ATC), then the name; None if nothing matches."""
        if medication.rxnorm and (found := self.kb.by_code("rxnorm", medication.rxnorm.strip())):
            return ResolvedMedication(medication, tuple(found), "rxnorm")
        if medication.atc and ATC_LEVEL5.fullmatch(code := medication.atc.strip().upper()):
            if found := self.kb.by_code("atc", code) or self.kb.by_code("atc-product", code):
                return ResolvedMedication(medication, tuple(found), "atc")
        if medication.name and (found := self.ingredients_named(medication.name)):
            return ResolvedMedication(medication, tuple(found), "name")
        return None

    def ingredients_named(self, text: str) -> list[Ingredient]:
        """The whole name, else each component of a clinical-drug name, else its [Brand]."""
        if found := self.lookup(fold(text)):
            return found
        cleaned = STRENGTH.sub(" ", PACKAGING.sub(" ", text))
        components = [self.lookup_within(part) for part in COMPONENT.split(cleaned) if part.strip()]
        if components and all(components):
            return unique([i for component in components for i in component])
        brand = re.search(r"\[([^\]]+)\]", text)
        return self.lookup(fold(brand.group(1))) if brand else []

    def lookup(self, folded: str) -> list[Ingredient]:
        return self.kb.by_name(folded) or self.kb.by_name(strip_salt(folded))

    def lookup_within(self, component: str) -> list[Ingredient]:
        """The longest run of words in `component` that names a drug (dose forms ignored)."""
        words = fold(component).split()
        for length in range(len(words), 0, -1):
            for start in range(len(words) - length + 1):
                window = words[start:start + length]
                if set(window) <= DOSE_FORM_WORDS or all(w.isdigit() for w in window):
                    continue
                if found := self.lookup(" ".join(window)):
                    return found
        return []

    def suggest(self, text: str, limit: int = 3) -> list[str]:
        """The closest known names to a failed one (difflib ratio >= 0.75), one per
        ingredient: "ibuprofen", or "advil (ibuprofen)" for a brand."""
        folded = fold(text)
        close = difflib.get_close_matches(folded, self.kb.all_names, n=20, cutoff=0.75) \
            if folded else []
        suggestions: dict[str, str] = {}
        for name in close:
            ingredients = " + ".join(i.name for i in self.kb.by_name(name))
            if ingredients not in suggestions:
                suggestions[ingredients] = name if fold(ingredients) == name \
                    else f"{name} ({ingredients})"
        return list(suggestions.values())[:limit]


def unique(ingredients: list[Ingredient]) -> list[Ingredient]:
    return list({ingredient.id: ingredient for ingredient in ingredients}.values())
