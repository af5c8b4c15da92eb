"""Batch review of a ward: many patients from a CSV file or FHIR R4 Bundles, one review each.

CSV: one row per medication, grouped by the `patient` column (a ward label such as a bed
number; the review never needs an identifier). Patient columns are read from each patient's
first row; `allergies` and `conditions` separate their items with ";":

    patient,age,sex,egfr,allergies,conditions,medication,rxnorm,atc
    bed-1,78,female,38,penicillin,heart failure;diabetes,warfarin,,
    bed-1,,,,,,Advil,,

FHIR: a Bundle file with one patient, or a folder of such `*.json` files.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from clinassist.errors import ClinassistError
from clinassist.serving.medication.errors import InvalidRequest, UnresolvedDrugs
from clinassist.serving.medication.fhir import read_bundle
from clinassist.serving.medication.normalise import MedicationInput
from clinassist.serving.medication.patient import Patient
from clinassist.serving.medication.review import MedicationReview

SEVERITIES = ("contraindicated", "major", "moderate", "minor")


class BatchInputError(ClinassistError):
    """The batch file cannot be read as CSV or FHIR."""


@dataclass(frozen=True)
class Case:
    label: str
    patient: Patient | None
    medications: list[MedicationInput]
    problem: str | None = None  # why this patient could not be read


def _number(text: str, kind, field: str, label: str):
    try:
        return kind(text) if text.strip() else None
    except ValueError:
        raise BatchInputError(f"{label}: {field} {text!r} is not a number") from None


def _items(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(";") if item.strip())


def cases_from_csv(path: Path) -> list[Case]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"patient", "medication"} - set(reader.fieldnames or [])
        if missing:
            raise BatchInputError(f"{path}: the CSV needs the columns {sorted(missing)}")
        rows: dict[str, list[dict]] = {}
        for row in reader:
            rows.setdefault(row["patient"].strip(), []).append(row)
    cases = []
    for label, group in rows.items():
        first = group[0]
        try:
            patient = Patient(age=_number(first.get("age") or "", int, "age", label),
                              sex=(first.get("sex") or "").strip() or None,
                              egfr=_number(first.get("egfr") or "", float, "egfr", label),
                              allergies=_items(first.get("allergies") or ""),
                              conditions=_items(first.get("conditions") or ""))
        except BatchInputError as error:
            cases.append(Case(label, None, [], str(error)))
            continue
        medications = [MedicationInput(name=(r.get("medication") or "").strip() or None,
                                       rxnorm=(r.get("rxnorm") or "").strip() or None,
                                       atc=(r.get("atc") or "").strip() or None) for r in group]
        cases.append(Case(label, patient, [m for m in medications if m.name or m.rxnorm or m.atc]))
    return cases


def cases_from_fhir(path: Path) -> list[Case]:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    cases = []
    for file in files:
        try:
            bundle = read_bundle(json.loads(file.read_text()))
            cases.append(Case(file.stem, bundle.patient, bundle.medications))
        except (json.JSONDecodeError, InvalidRequest) as error:
            cases.append(Case(file.stem, None, [], f"not a FHIR R4 Bundle: {error}"))
    return cases


def read_cases(path: Path) -> list[Case]:
    if not path.exists():
        raise BatchInputError(f"{path} does not exist")
    if path.is_dir() or path.suffix.lower() == ".json":
        return cases_from_fhir(path)
    if path.suffix.lower() == ".csv":
        return cases_from_csv(path)
    raise BatchInputError(f"{path}: give a .csv file, a FHIR Bundle .json file, or a folder "
                          "of Bundle files")


def review_case(review: MedicationReview, case: Case) -> dict:
    """One patient's review, or the reason it could not be done; unknown drugs are listed."""
    if case.problem is not None:
        return {"patient": case.label, "error": case.problem}
    if not case.medications:
        return {"patient": case.label, "error": "no medications"}
    try:
        return {"patient": case.label, **review.run(case.patient, case.medications, strict=False)}
    except UnresolvedDrugs as error:
        return {"patient": case.label, "error": str(error)}


def summary_table(results: list[dict]) -> str:
    header = ["patient", "drugs", "unknown", *SEVERITIES, "GerontoNet", "most severe alert"]
    rows = []
    for result in results:
        if "error" in result:
            rows.append([result["patient"], *["-"] * (len(header) - 2),
                         f"not reviewed: {result['error']}"])
            continue
        counts = [sum(a["severity"] == s for a in result["alerts"]) for s in SEVERITIES]
        top = result["alerts"][0]["text"] if result["alerts"] else "no alerts"
        unknown = len(result["unresolved"])
        rows.append([result["patient"], str(len(result["medications"]) + unknown), str(unknown),
                     *map(str, counts),
                     str(result["risk"]["gerontonet"]["score"]), top[:70]])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
