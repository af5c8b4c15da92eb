"""Every Synthea patient's current medication list runs end to end through the review."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import date

import pytest

from clinassist.config import data_dir
from clinassist.serving.medication.kb import KnowledgeBase
from clinassist.serving.medication.normalise import MedicationInput
from clinassist.serving.medication.patient import Patient
from clinassist.serving.medication.review import MedicationReview

EGFR_LOINC = "33914-3"
# Oral-contraceptive packs named only by brand, which no bundled vocabulary lists. They must
# come back in `unresolved` (never silently dropped); anything else unresolved is a regression.
KNOWN_UNRESOLVED = {"Yaz 28 Day Pack", "Levora 0.15/30 28 Day Pack", "Seasonique 91 Day Pack",
                    "Ortho Tri-Cyclen 28 Day Pack", "Norinyl 1+50 28 Day Pack",
                    "Trinessa 28 Day Pack", "Jolivette 28 Day Pack", "Errin 28 Day Pack"}


def rows(name: str) -> list[dict[str, str]]:
    with (data_dir() / "ehr_synthea50" / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def current(name: str) -> dict[str, list[dict[str, str]]]:
    """Rows without a STOP date, by patient."""
    by_patient = defaultdict(list)
    for row in rows(name):
        if not row["STOP"]:
            by_patient[row["PATIENT"]].append(row)
    return by_patient


def synthea_patients() -> list[tuple[Patient, list[MedicationInput]]]:
    medications, allergies = current("medications.csv"), current("allergies.csv")
    conditions = current("conditions.csv")
    egfr = {row["PATIENT"]: float(row["VALUE"])  # observations are in date order
            for row in rows("observations.csv") if row["CODE"] == EGFR_LOINC}
    cases = []
    for person in rows("patients.csv"):
        key = person["Id"]
        born = date.fromisoformat(person["BIRTHDATE"])
        patient = Patient(age=(date(2022, 3, 4) - born).days // 365,  # the export's date
                          sex={"F": "female", "M": "male"}.get(person["GENDER"]),
                          egfr=egfr.get(key),
                          allergies=tuple(row["DESCRIPTION"] for row in allergies[key]),
                          conditions=tuple(row["DESCRIPTION"] for row in conditions[key]))
        cases.append((patient, [MedicationInput(name=row["DESCRIPTION"], rxnorm=row["CODE"])
                                for row in medications[key]]))
    return cases


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    return MedicationReview(
        KnowledgeBase.open(tmp_path_factory.getbasetemp() / "medication" / "kb.sqlite"))


def test_every_synthea_patient_is_reviewed_end_to_end(review):
    cases = synthea_patients()
    assert len(cases) == 59
    unresolved, alert_count, with_medications = set(), 0, 0
    for patient, medications in cases:
        result = review.run(patient, medications, strict=False)
        unresolved |= {failure["input"] for failure in result["unresolved"]}
        assert len(result["medications"]) + len(result["unresolved"]) == len(medications)
        assert result["risk"]["gerontonet"]["score"] >= 0
        alert_count += len(result["alerts"])
        with_medications += bool(medications)
    assert unresolved <= KNOWN_UNRESOLVED
    assert with_medications >= 30 and alert_count > 0
