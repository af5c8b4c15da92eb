"""`clinassist medication review FILE`: a ward from CSV or FHIR Bundles, one review each."""

import json

import pytest

from service_process import cli
from test_medication_fhir_cds import BUNDLE

WARD = """patient,age,sex,egfr,allergies,conditions,medication,rxnorm,atc
bed-1,78,female,38,penicillin,heart failure,warfarin,,
bed-1,,,,,,Advil,,
bed-2,45,male,95,,,simvastatin,,
bed-2,,,,,,clarithromycin,,
bed-3,60,female,abc,,,metformin,,
bed-4,70,male,25,,,metformin,,
bed-4,,,,,,zzqx,,
bed-5,50,male,90,,,paracetamol,,
"""


@pytest.fixture(scope="module")
def ward_review(tmp_path_factory):
    home = tmp_path_factory.mktemp("ward")
    (home / "ward.csv").write_text(WARD)
    done = cli(home, "medication", "review", str(home / "ward.csv"), "--json",
               str(home / "out.json"))
    return done, {r["patient"]: r for r in json.loads((home / "out.json").read_text())}


def test_each_patient_gets_its_own_review(ward_review):
    done, results = ward_review
    assert list(results) == ["bed-1", "bed-2", "bed-3", "bed-4", "bed-5"]
    severities = {p: [a["severity"] for a in r.get("alerts", [])] for p, r in results.items()}
    assert severities["bed-2"][0] == "contraindicated"
    assert severities["bed-1"][0] in ("contraindicated", "major")
    assert "renal" in [a["type"] for a in results["bed-4"]["alerts"]]
    assert severities["bed-5"] == []


def test_bad_rows_and_unknown_drugs_are_reported_not_dropped(ward_review):
    done, results = ward_review
    assert "egfr 'abc' is not a number" in results["bed-3"]["error"]
    assert [u["input"] for u in results["bed-4"]["unresolved"]] == ["zzqx"]
    assert done.returncode == 1
    assert "4 of 5 patients reviewed" in done.stdout
    assert "bed-3" in done.stdout and "not reviewed" in done.stdout


def test_a_folder_of_fhir_bundles(tmp_path):
    (tmp_path / "ward").mkdir()
    (tmp_path / "ward" / "bed-a.json").write_text(json.dumps(BUNDLE))
    (tmp_path / "ward" / "bed-b.json").write_text("{not json")
    done = cli(tmp_path, "medication", "review", str(tmp_path / "ward"))
    assert "1 of 2 patients reviewed" in done.stdout
    assert "not a FHIR R4 Bundle" in done.stdout


def test_an_unreadable_batch_is_a_clear_error(tmp_path):
    done = cli(tmp_path, "medication", "review", str(tmp_path / "ward.xlsx"))
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr
