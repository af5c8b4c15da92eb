"""Which calibration and threshold turn the model's logit into a probability and a flag.

The bundle carries one operating point per population it was validated on (children aged 1-5,
adults), each fitted on that population's validation set. The patient's age picks one (unknown
age: the adult point). A site calibration overlay, fitted on the imaging centre's own labelled
studies (`clinassist calibrate site`), replaces the bundle's point for the populations it covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clinassist.serving.dicom import Finding

PAEDIATRIC, ADULT = "paediatric", "adult"
BUNDLE_SOURCE, SITE_SOURCE = "bundle", "site-calibration"
# What each population's validation set covered (the model card says more).
VALIDATED_AGES = {PAEDIATRIC: (1, 5), ADULT: (18, None)}


@dataclass(frozen=True)
class OperatingPoint:
    population: str
    temperature: float
    threshold: float
    source: str = BUNDLE_SOURCE
    site_calibration_version: int | None = None

    def probability(self, logit: float) -> float:
        return 1.0 / (1.0 + math.exp(-logit / self.temperature))

    def as_json(self) -> dict:
        return {"population": self.population, "source": self.source,
                "site_calibration_version": self.site_calibration_version,
                "temperature": self.temperature, "threshold": self.threshold}

    def describe(self) -> str:
        """One line for the SR and the Secondary Capture."""
        if self.source == SITE_SOURCE:
            return (f"{self.population} operating point of site calibration "
                    f"v{self.site_calibration_version}")
        return f"{self.population} operating point of the model bundle"


@dataclass(frozen=True)
class OperatingPoints:
    """The points in force for one model: the bundle's, overlaid by a site calibration."""

    points: dict[str, OperatingPoint]
    paediatric_below_years: float

    @classmethod
    def from_metadata(cls, metadata: dict, overlay: dict | None = None) -> "OperatingPoints":
        """`overlay` is a site calibration (see `site_calibration.SiteCalibration.as_json`)."""
        points = {name: OperatingPoint(name, float(entry["temperature"]),
                                       float(entry["threshold"]))
                  for name, entry in metadata["populations"].items()}
        for name, entry in (overlay or {}).get("populations", {}).items():
            points[name] = OperatingPoint(name, float(entry["temperature"]),
                                          float(entry["threshold"]), SITE_SOURCE,
                                          int(overlay["version"]))
        return cls(points, float(metadata["population_rule"]["paediatric_below_years"]))

    def population_of(self, age_years: float | None) -> str:
        if age_years is not None and age_years < self.paediatric_below_years:
            return PAEDIATRIC
        return ADULT

    def for_age(self, age_years: float | None) -> OperatingPoint:
        return self.points[self.population_of(age_years)]


def population_caution(age_years: float | None) -> Finding | None:
    """A non-blocking caution when the patient is outside the ages the model was validated on."""
    if age_years is None:
        return Finding("population", "The patient's age is not in the header; the adult "
                       "operating point is used. Add PatientAge for the right operating point.",
                       False)
    low, _ = VALIDATED_AGES[ADULT]
    child_low, child_high = VALIDATED_AGES[PAEDIATRIC]
    if child_low <= age_years < child_high + 1 or age_years >= low:
        return None
    return Finding("population", "The patient's age is outside the ages the model was "
                   f"validated on (children aged {child_low} to {child_high}, adults {low} and "
                   "over), so its score may be less reliable.", False)
