"""The project's own rule tables (`rules/*.yaml`), checked when loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from clinassist.errors import ClinassistError
from clinassist.serving.medication.severity import Severity

RULES_DIR = Path(__file__).with_name("rules")


@dataclass(frozen=True)
class RenalTier:
    below: float  # fires when eGFR < below
    severity: Severity
    text: str


@dataclass(frozen=True)
class RenalRule:
    drug: str
    measure: str  # eGFR or CrCl: what the source's cut-off is defined on
    source: str
    tiers: tuple[RenalTier, ...]

    def fired(self, egfr: float) -> RenalTier | None:
        """The most severe tier whose cut-off the eGFR is below."""
        firing = [tier for tier in self.tiers if egfr < tier.below]
        return max(firing, key=lambda tier: tier.severity) if firing else None


@dataclass(frozen=True)
class AllergyGroup:
    name: str
    aliases: tuple[str, ...]
    atc_prefixes: tuple[str, ...]
    source: str

    def covers(self, atc_codes: list[str]) -> bool:
        return any(code.startswith(self.atc_prefixes) for code in atc_codes)


def read_yaml(name: str) -> list[dict]:
    path = RULES_DIR / name
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ClinassistError(f"{path}: expected a list of rules")
    return entries


def renal_rules() -> list[RenalRule]:
    rules = []
    for entry in read_yaml("renal.yaml"):
        try:
            tiers = tuple(RenalTier(float(t["below"]), Severity.parse(t["severity"]), t["text"])
                          for t in entry["tiers"])
            if entry["measure"] not in ("eGFR", "CrCl") or not entry["source"] or not tiers:
                raise ValueError("measure must be eGFR or CrCl, with a source and tiers")
            rules.append(RenalRule(entry["drug"], entry["measure"], entry["source"], tiers))
        except (KeyError, ValueError, TypeError) as error:
            raise ClinassistError(f"rules/renal.yaml, rule {entry.get('drug')!r}: {error}; each "
                                  "rule needs drug, measure, source and tiers of below, "
                                  "severity, text") from error
    return rules


def allergy_groups() -> list[AllergyGroup]:
    try:
        return [AllergyGroup(e["name"], tuple(e["aliases"]), tuple(e["atc"]), e["source"])
                for e in read_yaml("allergy_groups.yaml")]
    except (KeyError, TypeError) as error:
        raise ClinassistError(f"rules/allergy_groups.yaml: missing {error}; each group needs "
                              "name, aliases, atc and source") from error
