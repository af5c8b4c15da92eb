"""De-identification (PS3.15 Annex E) on real files: the real CR and pydicom's own test files.

The expected action of each attribute is read from Table E.1-1 as data (`load_profile`), and
checked against what the output holds, attribute by attribute and at every depth.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import re

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from dicom_fixtures import dciodvfy_errors, real_cr, to_bytes
from service_process import cli
from clinassist.serving.deid import (DEFAULT_OPTIONS, Action, DeidError, Deidentifier, Region,
                                     load_profile)

KEY = bytes(range(32))
PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm",
                 "examples_ybr_color.dcm")
STEP = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)(?:\[(\d+)\])?")


def source(name: str) -> Dataset:
    if name.startswith("RG1"):
        return pydicom.dcmread(io.BytesIO(real_cr(name)))
    return pydicom.dcmread(get_testdata_file(name, download=False))


def elements(ds: Dataset, prefix: str = ""):
    """(path, element) of every attribute at every depth, paths as the report writes them."""
    for element in ds:
        path = f"{prefix}({element.tag.group:04X},{element.tag.element:04X})"
        yield path, element
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                yield from elements(item, f"{path}[{index}]")


def at(ds: Dataset, path: str):
    """The element at `path` in `ds`, or None when it (or an enclosing item) is absent."""
    steps = STEP.findall(path)
    for number, (group, element, index) in enumerate(steps):
        tag = int(group + element, 16)
        if tag not in ds:
            return None
        if number == len(steps) - 1:
            return ds[tag]
        items = ds[tag].value
        if not index or int(index) >= len(items):
            return None
        ds = items[int(index)]
    return None


def shifted(value: str, days: int, vr: str) -> str:
    day = datetime.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    return (day + datetime.timedelta(days=days)).strftime("%Y%m%d") + (value[8:] if vr == "DT"
                                                                        else "")


def values(element) -> list[str]:
    value = element.value
    return [str(v) for v in value] if isinstance(value, (list, pydicom.multival.MultiValue)) \
        else [str(value)]


@pytest.fixture(scope="module")
def deidentifier():
    return Deidentifier(KEY)


@pytest.mark.parametrize("name", ("RG1_UNCR", "RG1_J2KR", *PYDICOM_FILES))
def test_every_attribute_present_gets_the_action_of_table_e1_1(deidentifier, name):
    original = source(name)
    result = deidentifier.deidentify(original)
    out, profile = result.dataset, load_profile()
    shift = deidentifier.date_shift_days(str(original.PatientID))
    removed_parents: list[str] = []
    checked = 0
    for path, element in elements(original):
        if any(path.startswith(parent) for parent in removed_parents):
            continue
        rule = profile.rule(element.tag)
        after = at(out, path)
        if rule is None:  # not in the table: the profile keeps it as it was
            assert after is not None, path
            assert element.VR == "SQ" or after.value == element.value, path  # items: below
            continue
        checked += 1
        action = rule.action(DEFAULT_OPTIONS)
        if element.tag.is_private or action == Action.REMOVE:
            assert after is None, f"{path} ({element.keyword}) should be removed"
            removed_parents.append(path)
        elif element.keyword in ("PatientID", "PatientName"):
            assert str(after.value) == result.pseudonym
        elif action == Action.EMPTY:
            assert after is not None and after.value in (None, "", b"") or \
                (element.VR == "SQ" and len(after.value) == 0), path
            removed_parents.append(path)
        elif action == Action.DUMMY and element.VR != "SQ":
            assert after.value not in (None, "") and after.value != element.value or \
                element.value == after.value == "", path
        elif action == Action.NEW_UID and element.VR == "UI" and element.value:
            assert values(after) == [deidentifier.new_uid(v) for v in values(element)], path
        elif action == Action.CLEAN and element.VR in ("DA", "DT") and element.value:
            assert values(after) == [shifted(v, shift, element.VR) for v in values(element)], path
        elif action == Action.CLEAN and element.VR in ("LO", "LT", "SH", "ST", "UT"):
            assert str(original.PatientName).split("^")[0] not in str(after.value), path
        else:  # K; C of a time or a sequence; D, U or U* of a sequence: kept, items checked
            assert after is not None, path
    assert checked >= 15
    assert {row.path for row in result.actions} >= {p for p, e in elements(out)
                                                   if e.keyword not in DEID_MARKS}


DEID_MARKS = ("PatientIdentityRemoved", "DeidentificationMethod",
              "DeidentificationMethodCodeSequence", "CodeValue", "CodingSchemeDesignator",
              "CodeMeaning", "LongitudinalTemporalInformationModified")


def test_the_real_cr_gets_these_actions(deidentifier):
    """The figures quoted in the README."""
    counts = deidentifier.deidentify(source("RG1_UNCR")).counts()
    assert counts == {"C": 9, "D": 6, "U": 4, "X": 5, "Z": 6, "retained": 42}


def test_private_attributes_are_removed(deidentifier):
    original = source("CT_small.dcm")
    assert any(element.tag.is_private for element in original.iterall())
    out = deidentifier.deidentify(original).dataset
    assert not any(element.tag.is_private for element in out.iterall())


def test_the_output_says_how_it_was_deidentified(deidentifier):
    out = deidentifier.deidentify(source("RG1_UNCR")).dataset
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == [
        "113100", "113107", "113105"]
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_pseudonyms_and_uids_are_keyed_and_consistent(deidentifier):
    uncompressed, lossless = (deidentifier.deidentify(source(name))
                              for name in ("RG1_UNCR", "RG1_J2KR"))
    again = deidentifier.deidentify(source("RG1_UNCR"))
    other_site = Deidentifier(bytes(32)).deidentify(source("RG1_UNCR"))
    assert uncompressed.pseudonym == lossless.pseudonym == again.pseudonym != other_site.pseudonym
    assert uncompressed.dataset.SOPInstanceUID == again.dataset.SOPInstanceUID
    assert uncompressed.dataset.StudyDate == again.dataset.StudyDate
    assert other_site.dataset.StudyInstanceUID != uncompressed.dataset.StudyInstanceUID
    for out, name in ((uncompressed, "RG1_UNCR"), (lossless, "RG1_J2KR")):
        original = source(name)
        assert out.dataset.StudyInstanceUID == deidentifier.new_uid(original.StudyInstanceUID)
        assert out.dataset.SeriesInstanceUID == deidentifier.new_uid(original.SeriesInstanceUID)


def test_dates_keep_their_intervals(deidentifier):
    original = source("RG1_UNCR")
    out = deidentifier.deidentify(original).dataset

    def days(ds, keyword):
        value = ds[keyword].value
        return datetime.date(int(value[:4]), int(value[4:6]), int(value[6:8]))

    assert days(out, "StudyDate") != days(original, "StudyDate")
    assert days(out, "StudyDate") - days(out, "SeriesDate") == \
        days(original, "StudyDate") - days(original, "SeriesDate")


@pytest.mark.parametrize("name", ["RG1_UNCR", "RG1_J2KR"])  # uncompressed, JPEG 2000 lossless
def test_burned_in_annotation_is_refused_unless_pixels_are_cleaned(deidentifier, name):
    original = source(name)
    original.BurnedInAnnotation = "YES"
    with pytest.raises(DeidError, match="--clean-pixels"):
        deidentifier.deidentify(original)
    region = Region(left=0, top=0, right=400, bottom=120)
    cleaner = Deidentifier(KEY, clean_regions=[region])
    out = cleaner.deidentify(original).dataset
    # the keyed UID, as for an instance without burned-in text (decompressing kept it)
    assert out.SOPInstanceUID == cleaner.new_uid(original.SOPInstanceUID)
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    pixels, before = out.pixel_array, original.pixel_array
    assert (pixels[:120, :400] == 0).all() and before[:120, :400].any()
    assert np.array_equal(pixels[120:], before[120:])


def test_an_instance_without_patient_id_is_refused(deidentifier):
    with pytest.raises(DeidError, match="Patient ID"):
        deidentifier.deidentify(Dataset())


def test_the_output_is_still_a_valid_instance(deidentifier, tmp_path):
    original_path = tmp_path / "original.dcm"
    original_path.write_bytes(real_cr("RG1_UNCR"))
    out_path = tmp_path / "deid.dcm"
    deidentifier.deidentify(source("RG1_UNCR")).dataset.save_as(out_path,
                                                               enforce_file_format=True)
    # the source already fails on its zero Pixel Spacing; de-identification adds no error
    assert dciodvfy_errors(out_path) == dciodvfy_errors(original_path)


@pytest.mark.parametrize("name", ("RG1_UNCR", "RG1_J2KI"))
def test_the_triage_pipeline_scores_the_deidentified_instance_identically(deidentifier, name,
                                                                         tmp_path):
    from clinassist.serving.imaging.triage import Models, Pipeline

    models = Models.load(threads=1)

    async def infer(images):
        return models.infer(images)

    pipeline = Pipeline(models.describe(tmp_path), infer)
    data = real_cr(name)
    deidentified = to_bytes(deidentifier.deidentify(pydicom.dcmread(io.BytesIO(data))).dataset)
    before, after = (asyncio.run(pipeline.triage(body)) for body in (data, deidentified))
    assert before.result.probability is not None
    assert after.result.probability == before.result.probability
    assert after.result.flag == before.result.flag
    assert after.result.qc_passed == before.result.qc_passed


def test_the_command_writes_instances_and_a_report_and_leaks_no_identifier(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("RG1_UNCR", "RG1_J2KR"):
        (inputs / f"{name}.dcm").write_bytes(real_cr(name))
    (inputs / "notes.txt").write_text("not DICOM")
    run = cli(tmp_path, "deid", str(inputs), str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr
    assert "de-identified 2 instance(s)" in run.stdout and "1 file(s) skipped" in run.stdout
    written = sorted((tmp_path / "out").glob("*.dcm"))
    assert len(written) == 2
    with open(tmp_path / "out" / "deid_report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["instance"] for row in rows} == {path.name for path in written}
    assert {row["action"] for row in rows if row["keyword"] == "PatientBirthDate"} == {"Z"}
    original = source("RG1_UNCR")
    secrets = [str(original.PatientName), str(original.PatientID), str(original.PatientBirthDate),
               str(original.StudyInstanceUID), str(original.SeriesInstanceUID),
               str(original.SOPInstanceUID), str(original.OtherPatientIDs)]
    for path in [*written, tmp_path / "out" / "deid_report.csv"]:
        data = path.read_bytes()
        assert not [secret for secret in secrets if secret.encode() in data], path


def test_a_burned_in_instance_makes_the_command_fail_and_say_why(tmp_path):
    ds = source("RG1_UNCR")
    ds.BurnedInAnnotation = "YES"
    (tmp_path / "burned.dcm").write_bytes(to_bytes(ds))
    run = cli(tmp_path, "deid", str(tmp_path / "burned.dcm"), str(tmp_path / "out"))
    assert run.returncode == 1
    assert "burned-in annotation" in run.stdout
    assert not list((tmp_path / "out").glob("*.dcm"))
