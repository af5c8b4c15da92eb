"""Header QC: only frontal chest CR/DX images go to the model; the rest get a reason."""

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import DigitalXRayImageStorageForPresentation, DigitalXRayImageStorageForProcessing

from dicom_fixtures import real_cr, synthetic_cr
from clinassist.serving.dicom import Limits, check_header, patient_age_years, read_instance

# Lower-case and empty code strings are invalid CS values on purpose; pydicom warns.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def codes(ds, blocking=None):
    return sorted(f.code for f in check_header(ds) if blocking is None or f.blocking == blocking)


def test_the_real_chest_pa_passes():
    assert check_header(read_instance(real_cr(), Limits())) == []


def test_a_child_chest_pa_has_no_findings():
    assert check_header(synthetic_cr()) == []


@pytest.mark.parametrize(("name", "expected"), [
    ("CT_small.dcm", ["modality", "sop-class"]),
    ("MR_small.dcm", ["modality", "sop-class"]),
    ("examples_rgb_color.dcm", ["modality", "sop-class"]),
    ("test-SR.dcm", ["modality", "sop-class"]),
], ids=["ct", "mr", "us", "sr"])
def test_other_modalities_are_blocked(name, expected):
    ds = pydicom.dcmread(get_testdata_file(name, download=False), stop_before_pixels=True)
    assert codes(ds, blocking=True) == expected


@pytest.mark.parametrize("view", ["LL", "RL", "LATERAL", "LAT", "RLD", "LLD"])
def test_lateral_and_decubitus_views_are_blocked(view):
    (finding,) = check_header(synthetic_cr(ViewPosition=view))
    assert (finding.code, finding.blocking) == ("view-position", True)
    assert view in finding.message and "AP or PA" in finding.message


@pytest.mark.parametrize("view", ["AP", "PA", "pa"])
def test_frontal_views_pass(view):
    assert check_header(synthetic_cr(ViewPosition=view)) == []


@pytest.mark.parametrize("view", [None, ""])
def test_an_unknown_view_is_left_to_the_pixel_qc(view):
    ds = synthetic_cr()
    ds.ViewPosition = view
    (finding,) = check_header(ds)
    assert (finding.code, finding.blocking) == ("view-position-unknown", False)


@pytest.mark.parametrize(("body_part", "expected"), [
    ("CHEST", []), ("chest", []), ("", []), ("ABDOMEN", ["body-part"]), ("SKULL", ["body-part"]),
])
def test_body_part_must_be_chest_or_absent(body_part, expected):
    assert codes(synthetic_cr(BodyPartExamined=body_part)) == expected


def test_digital_x_ray_is_accepted_and_for_processing_gets_a_caution():
    assert check_header(synthetic_cr(Modality="DX",
                                     SOPClassUID=DigitalXRayImageStorageForPresentation)) == []
    raw = synthetic_cr(Modality="DX", SOPClassUID=DigitalXRayImageStorageForProcessing,
                       PresentationIntentType="FOR PROCESSING")
    assert [(f.code, f.blocking) for f in check_header(raw)] == [("for-processing", False)]


@pytest.mark.parametrize("image_type", [["ORIGINAL", "PRIMARY", "LOCALIZER"], "LOCALIZER"])
def test_a_localizer_is_blocked(image_type):
    assert codes(synthetic_cr(ImageType=image_type)) == ["image-type"]


def test_derived_primary_radiographs_pass():
    assert check_header(synthetic_cr(ImageType=["DERIVED", "PRIMARY"])) == []


@pytest.mark.parametrize(("orientation", "expected"), [
    (["L", "F"], []), (["R", "F"], []), (["F", "L"], ["orientation"]), (["R", "H"], ["orientation"]),
])
def test_an_image_stored_rotated_or_upside_down_is_blocked(orientation, expected):
    assert codes(synthetic_cr(PatientOrientation=orientation)) == expected


@pytest.mark.parametrize(("age", "years"), [
    ("003Y", 3), ("017Y", 17), ("216M", 18), ("040W", 40 * 7 / 365.25), ("075Y", 75), ("", None),
    ("75", None), ("abcY", None),
])
def test_patient_age_in_years_from_the_age_string(age, years):
    ds = synthetic_cr(PatientAge=age)
    assert patient_age_years(ds) == (pytest.approx(years) if years is not None else None)


def test_age_falls_back_to_birth_and_study_dates():
    ds = synthetic_cr(PatientBirthDate="19700101", StudyDate="20240101")
    del ds.PatientAge
    assert patient_age_years(ds) == pytest.approx(54, abs=0.01)
    ds.PatientBirthDate = "not a date"
    assert patient_age_years(ds) is None


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_missing_uids_are_refused_before_header_qc_because_no_result_could_be_filed(keyword):
    from clinassist.serving.dicom import DicomRejection
    from clinassist.serving.dicom.referable import check_referable

    ds = synthetic_cr()
    delattr(ds, keyword)
    with pytest.raises(DicomRejection, match=keyword):
        check_referable(ds)


def test_blocking_findings_come_first_and_each_ends_with_a_remedy():
    findings = check_header(synthetic_cr(Modality="CT", ViewPosition="", PatientAge="050Y"))
    assert [f.blocking for f in findings] == [True, False]
    for finding in findings:
        assert finding.message.endswith(".") and finding.message[0].isupper()
