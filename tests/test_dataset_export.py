"""`clinassist dataset export`: feedback -> a de-identified dataset the training loaders accept."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from dicom_fixtures import real_cr
from service_process import cli
from clinassist.serving.deid import Deidentifier
from clinassist.serving.dicom import radiograph_pixels
from clinassist.serving.imaging.feedback import FeedbackStore, Reading
from clinassist.serving.security import load_site_key


@dataclass
class Study:
    name: str
    dataset: pydicom.Dataset


def study(name: str, patient_id: str, patient_name: str, birth_date: str, **changes) -> Study:
    ds = pydicom.dcmread(io.BytesIO(real_cr()))
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = patient_id, patient_name, birth_date
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return Study(name, ds)


def summary(ds: pydicom.Dataset, result_id: str) -> dict:
    return {"id": result_id, "study_instance_uid": str(ds.StudyInstanceUID),
            "sop_instance_uid": str(ds.SOPInstanceUID), "probability": 0.6, "flag": "urgent",
            "model": {"name": "cxr_pneumonia", "version": "1.1.0"}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Five studies with feedback: two labelled, one relabelled (newest wins), one not
    assessable, one whose source instance is missing; exported through the CLI."""
    home = tmp_path_factory.mktemp("home")
    instances = home / "pacs-export"
    instances.mkdir()
    studies = [
        study("chen", "SITE-PATIENT-000042", "Chenoweth^Meiling", "19610214", PatientAge="063Y",
              PatientSex="F", ViewPosition="AP"),
        study("okafor", "SITE-PATIENT-000077", "Okafor-Nwosu^Chidiebere", "19880730",
              PatientSex="M"),
        study("chen-again", "SITE-PATIENT-000042", "Chenoweth^Meiling", "19610214",
              PatientAge="063Y", PatientSex="F"),
        study("unreadable", "SITE-PATIENT-000099", "Silvestre^Anabela", "19500101"),
        study("missing", "SITE-PATIENT-000100", "Novakovic^Jaroslav", "19700101"),
    ]
    for s in studies[:4]:
        s.dataset.save_as(instances / f"{s.name}.dcm", enforce_file_format=True)
    store = FeedbackStore(home)
    readings = {"chen": [Reading.PNEUMONIA], "okafor": [Reading.PNEUMONIA, Reading.NO_PNEUMONIA],
                "chen-again": [Reading.NO_PNEUMONIA], "unreadable": [Reading.NOT_ASSESSABLE],
                "missing": [Reading.PNEUMONIA]}
    for index, s in enumerate(studies):
        for reading in readings[s.name]:
            store.add(summary(s.dataset, f"{index:032x}"), reading, "a reason", "dr-test")
    output = home / "dataset"
    run = cli(home, "dataset", "export", "--since", date.today().isoformat(),
              "--instances", str(instances), str(output))
    assert run.returncode == 0, run.stderr + run.stdout
    return output, studies, home, run.stdout


def manifest(output) -> list[dict]:
    with open(output / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_training_loaders_accept_the_dataset(exported):
    from clinassist.training.cxr_data import checked_manifest_rows, verify_files

    output = exported[0]
    rows = checked_manifest_rows(output)
    verify_files([type("R", (), row) for row in rows], output)
    assert list(rows[0]) == ["path", "label", "label_id", "patient_id", "age_band", "sex", "view",
                             "equipment", "feedback_time", "md5"]


def test_labels_are_the_newest_reading_and_not_assessable_is_left_out(exported):
    output, studies, home, stdout = exported
    key = load_site_key(home)
    deid = Deidentifier(key)
    by_patient = {}
    for row in manifest(output):
        by_patient.setdefault(row["patient_id"], []).append((row["label"], row["label_id"]))
    chen, okafor = (deid.deidentify(s.dataset).pseudonym for s in studies[:2])
    assert sorted(by_patient[chen]) == [("no_pneumonia", "0"), ("pneumonia", "1")]
    assert by_patient[okafor] == [("no_pneumonia", "0")]
    assert len(by_patient) == 2
    card = (output / "DATA_CARD.md").read_text()
    assert "| reading not_assessable | 1 |" in card
    assert "| source instance not found | 1 |" in card
    assert "3 images of\n2 patients" in card
    assert "left out: reading not_assessable: 1, source instance not found: 1" in stdout


def test_rows_carry_bands_sex_view_and_equipment_from_the_source(exported):
    output, studies, home, _ = exported
    chen = Deidentifier(load_site_key(home)).deidentify(studies[0].dataset).pseudonym
    rows = [row for row in manifest(output) if row["patient_id"] == chen]
    assert {(r["age_band"], r["sex"]) for r in rows} == {("40-64", "F")}
    assert sorted(r["view"] for r in rows) == ["AP", "PA"]
    assert {r["equipment"] for r in rows} == {
        "Philips Medical Systems Cassette Holder Type 9840 500 70201"}
    okafor = [row for row in manifest(output) if row["patient_id"] != chen]
    assert okafor[0]["age_band"] == "5-17" and okafor[0]["sex"] == "M"  # born 1988, seen 2004


def test_images_are_the_display_ready_16_bit_pixels_of_the_deidentified_instance(exported):
    output = exported[0]
    row = manifest(output)[0]
    image = Image.open(output / row["path"])
    assert image.mode == "I;16" and not image.info
    dicom = output / "dicom" / (row["path"].removeprefix("images/").removesuffix(".png") + ".dcm")
    ds = pydicom.dcmread(dicom)
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID == row["patient_id"]
    expected = np.round(radiograph_pixels(ds) * 65535).astype(np.uint16)
    assert np.array_equal(np.asarray(image, dtype=np.uint16), expected)
    assert expected.max() > 60000  # bone is bright: MONOCHROME1 was inverted


def test_no_direct_identifier_reaches_any_output_byte(exported):
    output, studies, _, _ = exported
    secrets = set()
    for s in studies:
        ds = s.dataset
        secrets |= {str(ds.PatientName), *str(ds.PatientName).split("^"), str(ds.PatientID),
                    str(ds.PatientBirthDate), str(ds.StudyInstanceUID),
                    str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.OtherPatientIDs)}
    files = [path for path in output.rglob("*") if path.is_file()]
    assert {path.name for path in files} >= {"manifest.csv", "SHA256SUMS", "DATA_CARD.md",
                                             "deid_report.csv"}
    assert len([p for p in files if p.suffix in (".png", ".dcm")]) == 6
    for path in files:
        data = path.read_bytes()
        leaked = [secret for secret in secrets if secret.encode() in data]
        assert not leaked, f"{path.name} holds {leaked}"


def test_feedback_times_are_shifted_like_the_dicom_dates(exported):
    output = exported[0]
    for row in manifest(output):
        shifted = date.fromisoformat(row["feedback_time"][:10])
        assert shifted < date.today()


def test_nothing_since_a_later_date_fails_and_says_so(exported, tmp_path):
    _, _, home, _ = exported
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    run = cli(home, "dataset", "export", "--since", tomorrow, "--instances",
              str(home / "pacs-export"), str(tmp_path / "empty"))
    assert run.returncode == 2 and "no reading since" in run.stderr


def test_an_existing_output_folder_is_refused(exported):
    output, _, home, _ = exported
    run = cli(home, "dataset", "export", "--since", "2020-01-01", "--instances",
              str(home / "pacs-export"), str(output))
    assert run.returncode == 2 and "already exists" in run.stderr
