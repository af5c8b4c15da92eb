"""Per-population operating points: the patient's age picks the bundle's paediatric or adult
point (unknown age: adult), a site overlay replaces it, and the answer and the SR name it."""

from __future__ import annotations

import base64
import io
import math

import httpx
import pydicom
import pytest

from dicom_fixtures import real_cr, to_bytes
from clinassist.bundle import read_metadata
from clinassist.serving.imaging.operating_points import (ADULT, PAEDIATRIC, SITE_SOURCE,
                                                          OperatingPoints, population_caution)

METADATA = {"populations": {PAEDIATRIC: {"temperature": 0.9, "threshold": 0.8},
                            ADULT: {"temperature": 1.6, "threshold": 0.4}},
            "population_rule": {"paediatric_below_years": 18}}


@pytest.mark.parametrize(("age", "population"), [
    (0.5, PAEDIATRIC), (3, PAEDIATRIC), (17.99, PAEDIATRIC), (18, ADULT), (80, ADULT), (None, ADULT),
])
def test_the_age_picks_the_population(age, population):
    point = OperatingPoints.from_metadata(METADATA).for_age(age)
    assert point.population == population
    assert point.threshold == METADATA["populations"][population]["threshold"]


def test_the_probability_uses_the_populations_temperature():
    points = OperatingPoints.from_metadata(METADATA)
    assert points.for_age(40).probability(2.0) == pytest.approx(1 / (1 + math.exp(-2.0 / 1.6)))
    assert points.for_age(4).probability(2.0) == pytest.approx(1 / (1 + math.exp(-2.0 / 0.9)))


def test_a_site_overlay_replaces_only_the_populations_it_covers():
    overlay = {"version": 3, "populations": {ADULT: {"temperature": 2.0, "threshold": 0.55}}}
    points = OperatingPoints.from_metadata(METADATA, overlay)
    adult, child = points.for_age(50), points.for_age(4)
    assert (adult.source, adult.site_calibration_version, adult.threshold) == (SITE_SOURCE, 3, 0.55)
    assert child.source == "bundle" and child.threshold == 0.8
    assert "site calibration v3" in adult.describe()


@pytest.mark.parametrize(("age", "caution"), [
    (None, True), (0.4, True), (1, False), (5.9, False), (6, True), (17, True), (18, False),
    (90, False),
])
def test_ages_outside_the_validated_populations_get_a_caution(age, caution):
    finding = population_caution(age)
    assert (finding is not None) == caution
    if finding is not None:
        assert finding.code == "population" and not finding.blocking


def cr_aged(age: str | None) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(real_cr()))
    ds.pop("PatientBirthDate", None)  # the real CR's age comes from its birth and study dates
    if age is not None:
        ds.PatientAge = age
    return to_bytes(ds)


@pytest.mark.parametrize(("age", "population", "caution"), [
    ("004Y", PAEDIATRIC, False), ("045Y", ADULT, False), (None, ADULT, True), ("012Y", PAEDIATRIC, True),
])
def test_the_service_answers_with_the_point_of_the_patients_population(service, age, population,
                                                                       caution):
    bundle = read_metadata("cxr_pneumonia")[1]["populations"][population]
    answer = httpx.post(service.url + "/v1/imaging/triage?include=sr", content=cr_aged(age),
                        timeout=120, headers={**service.headers("radiologist"),
                                              "Content-Type": "application/dicom"}).json()
    point = answer["operating_point"]
    assert (point["population"], point["source"]) == (population, "bundle")
    assert answer["threshold"] == pytest.approx(bundle["threshold"])
    assert point["temperature"] == pytest.approx(bundle["temperature"])
    assert answer["flag"] == ("urgent" if answer["probability"] >= bundle["threshold"] else "routine")
    codes = [reason["code"] for reason in answer["qc"]["reasons"]]
    assert ("population" in codes) == caution
    sr = pydicom.dcmread(io.BytesIO(base64.b64decode(answer["sr"])))
    texts = [item.TextValue for item in sr.ContentSequence[-1].ContentSequence[-1].ContentSequence
             if "TextValue" in item]
    assert f"{population} operating point of the model bundle" in texts
