"""One ordered severity scale, and how each source's scale and each standard maps onto it."""

from __future__ import annotations

from enum import IntEnum


class Severity(IntEnum):
    """Ordered: a larger value matters more."""

    MINOR = 1
    MODERATE = 2
    MAJOR = 3
    CONTRAINDICATED = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def fhir(self) -> str:
        """FHIR R4 DetectedIssue.severity (value set detectedissue-severity)."""
        return {Severity.CONTRAINDICATED: "high", Severity.MAJOR: "high",
                Severity.MODERATE: "moderate", Severity.MINOR: "low"}[self]

    @property
    def cds_indicator(self) -> str:
        """CDS Hooks Card.indicator (critical, warning, info)."""
        return {Severity.CONTRAINDICATED: "critical", Severity.MAJOR: "critical",
                Severity.MODERATE: "warning", Severity.MINOR: "info"}[self]

    @classmethod
    def parse(cls, label: str) -> Severity:
        try:
            return cls[label.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {label!r}; use one of "
                             f"{', '.join(s.label for s in reversed(cls))}") from None


# A model prediction has no source severity: it is reported as `unknown` and tiered as minor
# at most (FHIR low, CDS info), so that it never outranks a fact or passes a stricter filter.
UNKNOWN = "unknown"
UNKNOWN_TIER = Severity.MINOR


def tier_of(label: str) -> Severity:
    """The tier a reported severity label is filtered at: `unknown` counts as minor."""
    return UNKNOWN_TIER if label == UNKNOWN else Severity.parse(label)


# ANSM thesaurus levels (folded text) -> our scale, with ANSM's official English wording.
ANSM_LEVELS: dict[str, tuple[Severity, str]] = {
    "contre indication": (Severity.CONTRAINDICATED, "contraindication"),
    "association deconseillee": (Severity.MAJOR, "combination not recommended"),
    "precaution d emploi": (Severity.MODERATE, "precaution for use"),
    "a prendre en compte": (Severity.MINOR, "to be taken into account"),
    "il convient de prendre en compte": (Severity.MINOR, "to be taken into account"),
}

# DDInter levels -> our scale; "Unknown" has no severity and is not loaded.
DDINTER_LEVELS: dict[str, Severity] = {
    "Major": Severity.MAJOR, "Moderate": Severity.MODERATE, "Minor": Severity.MINOR,
}
