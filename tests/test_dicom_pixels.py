"""Reading uploads safely and turning radiograph pixels into display-ready MONOCHROME2."""

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import JPEGLSLossless, JPEGLSNearLossless, MPEG2MPML, RLELossless

from clinassist.errors import ClinassistError
from dicom_fixtures import real_cr, synthetic_cr, to_bytes
from clinassist.serving.dicom import DicomRejection, Limits, pixel_spacing, radiograph_pixels, read_instance

# The real CR's header window (centre 15000, width 30000) maps one stored value to 1/29999.
ONE_STORED_VALUE = 1 / 29999


def display(data: bytes) -> np.ndarray:
    return radiograph_pixels(read_instance(data, Limits()))


def rejection(data: bytes) -> DicomRejection:
    with pytest.raises(DicomRejection) as caught:
        display(data)
    return caught.value


@pytest.fixture(scope="module")
def uncompressed() -> np.ndarray:
    return display(real_cr("RG1_UNCR"))


def test_real_cr_is_display_ready_float32(uncompressed):
    assert uncompressed.shape == (1955, 1841) and uncompressed.dtype == np.float32
    assert 0 <= uncompressed.min() < uncompressed.max() <= 1


def test_the_pixel_pipeline_leaves_the_decoded_pixels_as_they_were(uncompressed):
    """It works in place on its own float copy; pydicom's cached pixel_array stays untouched,
    so the same instance decodes the same each time (the gateway and the object builder)."""
    source = read_instance(real_cr("RG1_UNCR"), Limits())
    stored = source.pixel_array.copy()
    first, again = radiograph_pixels(source), radiograph_pixels(source)
    assert np.array_equal(source.pixel_array, stored)
    assert np.array_equal(first, again) and np.array_equal(first, uncompressed)


def test_jpeg2000_lossless_decodes_identically(uncompressed):
    assert np.array_equal(display(real_cr("RG1_J2KR")), uncompressed)


def test_jpeg2000_lossy_stays_within_one_percent_of_the_range(uncompressed):
    difference = np.abs(display(real_cr("RG1_J2KI")) - uncompressed)
    assert 0 < difference.mean() < 0.01 and difference.max() < 0.05


def test_monochrome1_is_inverted_so_bone_is_bright(uncompressed):
    ds = read_instance(real_cr(), Limits())
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    windowed = np.clip((ds.pixel_array - 14999.5) / 29999 + 0.5, 0, 1)  # LINEAR, PS3.3 C.11.2.1.2
    np.testing.assert_allclose(uncompressed, 1 - windowed, atol=1e-6)
    lung, mediastinum = uncompressed[400:1000, 360:680], uncompressed[400:1000, 860:980]
    assert lung.mean() + 0.2 < mediastinum.mean()


@pytest.mark.parametrize(("syntax", "options", "max_error"), [
    (RLELossless, {}, 0),
    (JPEGLSLossless, {}, 0),
    (JPEGLSNearLossless, {"jls_error": 2}, 2 * ONE_STORED_VALUE),
], ids=["rle", "jpeg-ls-lossless", "jpeg-ls-near-lossless"])
def test_transcodes_of_the_real_cr_decode_like_the_original(uncompressed, syntax, options,
                                                              max_error):
    if not get_encoder(syntax).is_available:
        pytest.skip(f"no {syntax.name} encoder installed")
    ds = read_instance(real_cr(), Limits())
    ds.compress(syntax, **options)
    error = np.abs(display(to_bytes(ds)) - uncompressed).max()
    assert error <= max_error + 1e-6


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEGLSNearLossless_16.dcm", "MR_small_RLE.dcm",
                                  "MR_small_jp2klossless.dcm", "MR_small_implicit.dcm"])
def test_other_transfer_syntaxes_decode(name):
    data = open(get_testdata_file(name, download=False), "rb").read()
    ds = read_instance(data, Limits())
    pixels = radiograph_pixels(ds)
    assert pixels.shape == (ds.Rows, ds.Columns) and 0 <= pixels.min() < pixels.max() <= 1


STORED = np.array([[0, 100, 200, 300, 400]], dtype=np.uint16)
RESCALED = {"RescaleSlope": 2, "RescaleIntercept": -100}  # -> -100, 100, 300, 500, 700


def sigmoid(x, centre, width):  # PS3.3 C.11.2.1.3
    return 1 / (1 + np.exp(-4 * (x - centre) / width))


@pytest.mark.parametrize(("attributes", "expected"), [
    ({**RESCALED, "WindowCenter": 300.5, "WindowWidth": 401}, [0, 0, 0.5, 1, 1]),
    ({"WindowCenter": 300.5, "WindowWidth": 401}, [0, 0, 0.25, 0.5, 0.75]),
    ({**RESCALED, "WindowCenter": [300.5, 50], "WindowWidth": [401, 20]}, [0, 0, 0.5, 1, 1]),
    ({**RESCALED}, [0, 0.25, 0.5, 0.75, 1]),
    ({**RESCALED, "WindowCenter": "NaN", "WindowWidth": 401}, [0, 0.25, 0.5, 0.75, 1]),
    ({**RESCALED, "PhotometricInterpretation": "MONOCHROME1"}, [1, 0.75, 0.5, 0.25, 0]),
    ({**RESCALED, "WindowCenter": 300, "WindowWidth": 400, "VOILUTFunction": "SIGMOID"},
     sigmoid(np.array([-100, 100, 300, 500, 700]), 300, 400)),
], ids=["rescale-then-window", "window-on-stored", "first-of-two-windows", "no-window-full-range",
        "non-finite-window-ignored", "monochrome1-inverted", "sigmoid-window"])
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on the invalid values
def test_modality_lut_then_voi_lut(attributes, expected):
    pixels = display(to_bytes(synthetic_cr(STORED, **attributes)))
    np.testing.assert_allclose(pixels[0], expected, atol=1e-6)


def test_voi_lut_sequence_is_applied():
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [5, 0, 8])
    item.add_new("LUTData", "US", [0, 10, 50, 200, 255])
    stored = np.array([[0, 1, 2, 3, 4]], dtype=np.uint16)
    pixels = display(to_bytes(synthetic_cr(stored, VOILUTSequence=[item])))
    np.testing.assert_allclose(pixels[0], np.array([0, 10, 50, 200, 255]) / 255, atol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on the invalid values
def test_a_non_finite_rescale_is_a_corrupt_header():
    error = rejection(to_bytes(synthetic_cr(RescaleSlope="NaN", RescaleIntercept=0)))
    assert (error.code, error.http_status) == ("corrupt-header", 400)


def test_multi_frame_is_rejected():
    two_frames = np.zeros((2, 8, 8), np.uint16)
    ds = synthetic_cr(two_frames[0], NumberOfFrames=2, PixelData=two_frames.tobytes())
    error = rejection(to_bytes(ds))
    assert (error.code, error.http_status) == ("multi-frame", 422)


def test_colour_is_rejected():
    rgb = np.zeros((8, 8, 3), np.uint8)
    ds = synthetic_cr(rgb[..., 0], bits_stored=8, SamplesPerPixel=3, PhotometricInterpretation="RGB",
                      PlanarConfiguration=0, PixelData=rgb.tobytes())
    assert rejection(to_bytes(ds)).code == "colour"
    ultrasound = open(get_testdata_file("examples_rgb_color.dcm", download=False), "rb").read()
    assert rejection(ultrasound).code == "colour"


def test_six_bits_stored_is_rejected():
    error = rejection(to_bytes(synthetic_cr(np.zeros((8, 8), np.uint8), bits_stored=6)))
    assert (error.code, error.http_status) == ("bits-stored", 422)
    assert "8 or 10 to 16 bits" in error.message


def test_missing_pixel_data_is_rejected():
    ds = synthetic_cr()
    del ds.PixelData
    assert rejection(to_bytes(ds)).code == "missing-pixel-data"


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on the invalid values
@pytest.mark.parametrize(("damage", "code"), [
    (lambda data: b"", "not-dicom"),
    (lambda data: random.Random(1).randbytes(5000), "not-dicom"),
    (lambda data: data[:len(data) // 2], "truncated"),
    (lambda data: data[:140] + b"\xff" * 40 + data[180:], "corrupt-header"),
], ids=["empty", "random-bytes", "truncated-pixel-data", "garbage-in-file-meta"])
def test_damaged_uploads_are_rejected_as_bad_requests(damage, code):
    error = rejection(damage(real_cr()))
    assert (error.code, error.http_status) == (code, 400)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on the invalid values
def test_truncated_compressed_and_pydicom_truncated_files_are_rejected():
    for data in (real_cr("RG1_J2KR")[:2_000_000],
                 open(get_testdata_file("MR_truncated.dcm", download=False), "rb").read()):
        assert rejection(data).http_status in (400, 422)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on the invalid values
def test_randomly_damaged_headers_only_ever_give_a_rejection():
    """Seeded fuzzing: any outcome but an exception other than DicomRejection is a bug."""
    original = to_bytes(synthetic_cr(WindowCenter=2000, WindowWidth=4000))
    rng = random.Random(7)
    for _ in range(200):
        damaged = bytearray(original)
        for _ in range(4):
            damaged[rng.randrange(128, len(original) - 64 * 48 * 2)] = rng.randrange(256)
        try:
            display(bytes(damaged))
        except DicomRejection as error:
            assert error.http_status in (400, 413, 415, 422)


def test_a_header_claiming_60000_squared_pixels_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(Dataset, "pixel_array",
                        property(lambda ds: pytest.fail("pixel data was decoded")))
    bomb = synthetic_cr(np.zeros((4, 4), np.uint16), Rows=60000, Columns=60000)
    with pytest.raises(DicomRejection) as caught:
        read_instance(to_bytes(bomb), Limits())
    assert (caught.value.code, caught.value.http_status) == ("too-large", 413)


def test_an_upload_over_the_byte_limit_is_refused():
    with pytest.raises(DicomRejection, match="CLINASSIST_MAX_DICOM_BYTES") as caught:
        read_instance(real_cr(), Limits(max_bytes=1_000_000))
    assert caught.value.http_status == 413


def test_a_transfer_syntax_without_a_decoder_is_unsupported_media():
    video = synthetic_cr(PixelData=encapsulate([b"\x00" * 64]))
    video.file_meta.TransferSyntaxUID = MPEG2MPML
    with pytest.raises(DicomRejection, match="MPEG2") as caught:
        read_instance(to_bytes(video), Limits())
    assert (caught.value.code, caught.value.http_status) == ("unsupported-transfer-syntax", 415)


def test_limits_come_from_the_environment(monkeypatch):
    assert Limits.from_env() == Limits(64 * 1024 * 1024, 40_000_000)
    monkeypatch.setenv("CLINASSIST_MAX_DICOM_BYTES", "1000")
    monkeypatch.setenv("CLINASSIST_MAX_DICOM_PIXELS", "2000")
    assert Limits.from_env() == Limits(1000, 2000)
    monkeypatch.setenv("CLINASSIST_MAX_DICOM_PIXELS", "lots")
    with pytest.raises(ClinassistError, match="CLINASSIST_MAX_DICOM_PIXELS='lots'"):
        Limits.from_env()


@pytest.mark.parametrize(("attributes", "expected"), [
    ({"PixelSpacing": [0.2, 0.3], "ImagerPixelSpacing": [0.1, 0.1]}, (0.2, 0.3)),
    ({"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.15, 0.15]}, (0.15, 0.15)),
    ({"ImagerPixelSpacing": [0.143, 0.143]}, (0.143, 0.143)),
    ({"PixelSpacing": [0, 0]}, None),
    ({"PixelSpacing": "0.2"}, None),
    ({}, None),
], ids=["pixel-spacing-first", "zero-falls-back-to-imager", "imager-only", "zero", "one-value",
        "missing"])
def test_pixel_spacing(attributes, expected):
    assert pixel_spacing(synthetic_cr(**attributes)) == expected


def test_the_real_cr_zero_pixel_spacing_gives_none():
    assert pixel_spacing(read_instance(real_cr(), Limits())) is None


@pytest.mark.parametrize("module", ["clinassist.serving.dicom", "clinassist.serving.service",
                                    "clinassist.serving.gateway.gateway",
                                    "clinassist.serving.medication.review"])
def test_serving_never_imports_torch_or_monai(module):
    check = f"import sys, {module}; print(sorted({{'torch', 'monai'}} & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", check], cwd=Path(__file__).parent.parent,
                         capture_output=True, text=True)
    assert (run.returncode, run.stdout.strip()) == (0, "[]"), run.stderr
