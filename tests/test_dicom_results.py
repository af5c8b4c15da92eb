"""The SR and Secondary Capture written back: valid DICOM, in the source's study, naming the model."""

import numpy as np
import pydicom
import pytest

from dicom_fixtures import dciodvfy_errors, real_cr, synthetic_cr
from clinassist.serving.dicom import (
    Limits,
    TriageResult,
    build_secondary_capture,
    build_sr,
    radiograph_pixels,
    read_instance,
)
from clinassist.serving.dicom.render import MAX_SIDE, heat_colours, render
from clinassist.serving.dicom.results import _caption

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the source's one-part PN

MODEL = {"model_name": "cxr_pneumonia", "model_version": "1.2.0", "threshold": 0.4}
CAM = np.zeros((14, 14), np.float32)
CAM[6:9, 2:5] = 3.0  # evidence in the image's left third, rows 43-64 %
CAM[0, 13] = -2.0  # counter-evidence is never painted
TRIAGED = TriageResult(0.83, "urgent", qc_passed=True, cam=CAM,
                       qc_reasons=[("population", "The patient is an adult.")], **MODEL)
ROUTINE_IN_URGENT_STUDY = TriageResult(0.2, "routine", qc_passed=True, cam=CAM,
                                       study_priority="urgent", **MODEL)
FAILED = TriageResult(None, None, qc_passed=False, qc_reasons=[
    ("view-position", "The view position is 'LL'; only frontal chest radiographs are triaged."),
    ("population", "The patient is an adult.")], **MODEL)


@pytest.fixture(scope="module")
def source():
    return read_instance(real_cr(), Limits())


@pytest.fixture(scope="module")
def pixels(source):
    return radiograph_pixels(source)


@pytest.fixture(scope="module")
def written(source, pixels, tmp_path_factory):
    """Each object built from the real CR, saved and read back as a PACS would."""
    folder = tmp_path_factory.mktemp("results")
    objects = {"sr": build_sr(source, TRIAGED), "sr-failed": build_sr(source, FAILED),
               "sr-study-urgent": build_sr(source, ROUTINE_IN_URGENT_STUDY),
               "sc": build_secondary_capture(source, pixels, TRIAGED),
               "sc-failed": build_secondary_capture(source, pixels, FAILED)}
    for name, ds in objects.items():
        ds.save_as(folder / f"{name}.dcm", enforce_file_format=True)
    return {name: folder / f"{name}.dcm" for name in objects}


def content_items(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def named(ds, meaning):
    return [item for item in content_items(ds)
            if item.ConceptNameCodeSequence[0].CodeMeaning == meaning]


def coded_value(ds, meaning):
    return [item.ConceptCodeSequence[0].CodeMeaning for item in named(ds, meaning)]


@pytest.mark.parametrize("name", ["sr", "sr-failed", "sr-study-urgent", "sc", "sc-failed"])
def test_objects_pass_dciodvfy(written, name):
    assert dciodvfy_errors(written[name]) == []


@pytest.mark.parametrize("name", ["sr", "sr-failed", "sc", "sc-failed"])
def test_objects_join_the_source_study_in_a_new_series_naming_the_model(written, source, name):
    ds = pydicom.dcmread(written[name])
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.PatientID == source.PatientID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.SeriesDescription == "clinassist triage"
    model = [item for item in ds.ContributingEquipmentSequence if item.Manufacturer == "clinassist"]
    assert [(item.ManufacturerModelName, item.SoftwareVersions) for item in model] == [
        ("cxr_pneumonia", "1.2.0")]
    assert model[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"


def test_sr_and_sc_are_two_distinct_new_series(written):
    series = {pydicom.dcmread(path).SeriesInstanceUID for path in written.values()}
    assert len(series) == len(written)


def test_sr_is_a_tid_1500_report_on_the_source_image(written, source):
    sr = pydicom.dcmread(written["sr"])
    assert sr.SOPClassUID.name == "Comprehensive 3D SR Storage"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    (image,) = [item for item in content_items(sr) if item.ValueType == "IMAGE"]
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    (device,) = named(sr, "Device Observer Name")
    assert device.TextValue == "cxr_pneumonia"
    assert [item.TextValue for item in named(sr, "Algorithm Version")] == ["1.2.0"]


def test_sr_holds_the_probability_finding_priority_and_qc_outcome(written):
    sr = pydicom.dcmread(written["sr"])
    (probability,) = named(sr, "Probability")
    measured = probability.MeasuredValueSequence[0]
    assert float(measured.NumericValue) == pytest.approx(0.83)
    assert measured.MeasurementUnitsCodeSequence[0].CodeValue == "{probability}"
    (threshold,) = named(sr, "Decision threshold")
    assert float(threshold.MeasuredValueSequence[0].NumericValue) == pytest.approx(0.4)
    assert coded_value(sr, "Pneumonia") == ["Present"]
    assert coded_value(sr, "Triage priority") == ["Urgent"]
    assert coded_value(sr, "Input quality control") == ["Passed"]
    assert coded_value(sr, "Input quality control finding") == ["population"]


def test_sr_carries_the_study_priority_beside_the_instance_flag(written):
    sr = pydicom.dcmread(written["sr-study-urgent"])
    assert coded_value(sr, "Triage priority") == ["Routine"]
    assert coded_value(sr, "Study worklist priority") == ["Urgent"]
    assert coded_value(pydicom.dcmread(written["sr"]), "Study worklist priority") == []


def test_a_qc_failed_sr_has_no_probability_only_the_reasons(written):
    sr = pydicom.dcmread(written["sr-failed"])
    assert [item for item in content_items(sr) if item.ValueType == "NUM"] == []
    assert named(sr, "Pneumonia") == [] and named(sr, "Triage priority") == []
    assert coded_value(sr, "Input quality control") == ["Failed"]
    assert coded_value(sr, "Input quality control finding") == ["view-position", "population"]
    assert [item.TextValue for item in named(sr, "Comment")] == [m for _, m in FAILED.qc_reasons]


def test_sc_is_burned_in_8_bit_colour_of_the_radiograph_jpeg_baseline(written, source):
    sc = pydicom.dcmread(written["sc"])
    assert sc.BurnedInAnnotation == "YES"
    assert sc.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"  # JPEG Baseline
    assert (sc.PhotometricInterpretation, sc.SamplesPerPixel, sc.BitsAllocated) == (
        "YBR_FULL_422", 3, 8)
    assert (sc.LossyImageCompression, sc.LossyImageCompressionMethod) == ("01", "ISO_10918_1")
    assert (sc.Rows, sc.Columns) == (source.Rows, source.Columns)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_sc_of_the_real_cr_weighs_under_a_megabyte(written, source):
    uncompressed = source.Rows * source.Columns * 3
    size = written["sc"].stat().st_size
    assert size <= 1_000_000 < uncompressed
    ratio = float(pydicom.dcmread(written["sc"]).LossyImageCompressionRatio)
    assert ratio == pytest.approx(uncompressed / size, rel=0.01)


def test_sc_decodes_to_the_rendered_picture_within_jpeg_error(written, pixels):
    rgb = pydicom.dcmread(written["sc"]).pixel_array.astype(int)  # YBR -> RGB by pydicom
    error = np.abs(rgb - render(pixels, TRIAGED.cam, _caption(TRIAGED)))
    assert error.mean() < 1.5 and np.percentile(error, 99) <= 6


def test_sc_paints_positive_evidence_only(written, pixels):
    rgb = pydicom.dcmread(written["sc"]).pixel_array.astype(int)
    rows, cols = rgb.shape[:2]
    hot = rgb[int(rows * 0.52), int(cols * 0.25)]
    assert hot[0] - hot[2] > 60  # red over the evidence
    for row, col in ((int(rows * 0.9), int(cols * 0.75)),  # no evidence
                     (int(rows * 0.03), cols - 5)):  # counter-evidence
        patch = rgb[row - 2:row + 3, col - 2:col + 3].reshape(-1, 3)
        assert np.ptp(patch, axis=1).max() <= 3  # grey: no colour cast
        grey = pixels[row - 2:row + 3, col - 2:col + 3].ravel() * 255
        assert np.abs(patch.mean(axis=1) - grey).mean() <= 3


def test_sc_burns_in_the_text_top_left(written, pixels):
    for name in ("sc", "sc-failed"):
        rgb = pydicom.dcmread(written[name]).pixel_array
        band = rgb[: pixels.shape[0] // 10, : pixels.shape[1] // 3]
        assert (band >= 240).all(axis=-1).sum() > 500  # white glyphs on the dark band


def test_a_large_image_is_downscaled_to_2048_on_its_long_side():
    big = synthetic_cr(np.zeros((3000, 1200), np.uint16), PatientName="Test^Big")
    sc = build_secondary_capture(big, np.zeros((3000, 1200), np.float32), TRIAGED)
    assert (sc.Rows, sc.Columns) == (MAX_SIDE, 819)


def test_heat_colours_run_from_blue_to_red():
    assert heat_colours(np.array([0.0, 1.0])).tolist() == [[0, 0, 255], [255, 0, 0]]


@pytest.mark.parametrize(("arguments", "problem"), [
    ({"probability": None, "flag": "urgent", "qc_passed": True}, "passed QC needs a probability"),
    ({"probability": 1.5, "flag": "urgent", "qc_passed": True}, "passed QC needs a probability"),
    ({"probability": 0.5, "flag": "soon", "qc_passed": True}, "passed QC needs a probability"),
    ({"probability": 0.5, "flag": None, "qc_passed": False}, "failed QC has no probability"),
    ({"probability": None, "flag": None, "qc_passed": False}, "failed QC has no probability"),
])
def test_an_inconsistent_result_is_refused_at_construction(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        TriageResult(**arguments, **MODEL)


def test_a_source_lacking_optional_patient_study_and_orientation_attributes_still_validates(
        tmp_path):
    minimal = synthetic_cr()
    for keyword in ("PatientOrientation", "BodyPartExamined", "PatientAge"):
        delattr(minimal, keyword)
    pixels = radiograph_pixels(minimal)
    for name, ds in (("sr", build_sr(minimal, TRIAGED)),
                     ("sc", build_secondary_capture(minimal, pixels, TRIAGED))):
        ds.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / f"{name}.dcm") == []
    assert "PatientID" not in minimal  # the source itself is left as it came


def test_a_peer_without_jpeg_gets_the_same_sc_instance_on_every_delivery(written):
    """A redelivery (after a crash, or `gateway retry`) of the Secondary Capture decompressed
    for a peer that accepts only uncompressed transfer syntaxes is the same instance again, not
    a second one in the study."""
    from clinassist.serving.gateway.config import parse_destination
    from clinassist.serving.gateway.sender import c_store
    from test_gateway_support import Destination

    objects = [written["sr"].read_bytes(), written["sc"].read_bytes()]
    destination = Destination().start()  # pynetdicom's default syntaxes: no JPEG
    try:
        for _ in range(2):
            c_store("CLINASSIST", parse_destination(str(destination)), objects)
    finally:
        destination.stop()
    (kinds,) = destination.results_by_study().values()
    assert kinds == {ds.SOPClassUID: {ds.SOPInstanceUID} for ds in map(
        pydicom.dcmread, (written["sr"], written["sc"]))}
    assert {ds.PhotometricInterpretation for ds in destination.stored
            if ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage} == {"RGB"}  # decoded
