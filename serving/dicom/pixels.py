"""Read an uploaded DICOM instance safely and turn its pixels into a display-ready radiograph.

Limits (`Limits.from_env()`), both positive whole numbers:
- `CLINASSIST_MAX_DICOM_BYTES` (default 67108864, 64 MiB): the largest upload parsed at all.
- `CLINASSIST_MAX_DICOM_PIXELS` (default 40000000): the largest Rows x Columns x frames x
  samples decoded. It is checked from the header before decompression, so a small file that
  claims a huge image (a decompression bomb) is refused with 413 instead of exhausting memory.

Pixel pipeline (PS3.3 C.11, PS3.4 N.2.1.1): stored values -> Modality LUT (LUT or Rescale
Slope/Intercept) -> VOI LUT (VOI LUT Sequence, else the first Window Center/Width, else the
image's own range) -> [0, 1] -> MONOCHROME1 inverted, so the output always reads as
MONOCHROME2 (bone bright).
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import UID

from clinassist.errors import ClinassistError
from clinassist.serving.dicom.errors import DicomRejection

UNDEFINED_LENGTH = 0xFFFFFFFF
GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
MONOCHROME1 = "MONOCHROME1"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or int(raw) == 0:
        raise ClinassistError(f"{name}={raw!r} is not a positive whole number; "
                              f"set it to one (default {default}) or unset it")
    return int(raw)


@dataclass(frozen=True)
class Limits:
    """How much one upload may weigh before it is refused (see the module docstring)."""

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000

    @classmethod
    def from_env(cls) -> Limits:
        return cls(max_bytes=_env_int("CLINASSIST_MAX_DICOM_BYTES", cls.max_bytes),
                   max_pixels=_env_int("CLINASSIST_MAX_DICOM_PIXELS", cls.max_pixels))


def read_instance(data: bytes, limits: Limits) -> Dataset:
    """Parse one DICOM Part 10 file held in memory; pixel data stays encoded.

    Raises DicomRejection for an empty, oversized, non-DICOM, truncated or corrupt file, a
    transfer syntax no installed codec decodes, and an image with more pixels than allowed.
    """
    if not data:
        raise DicomRejection("not-dicom", "The upload is empty; send one DICOM Part 10 file.")
    if len(data) > limits.max_bytes:
        raise DicomRejection("too-large", f"The upload is {len(data):,} bytes, above the limit of "
                             f"{limits.max_bytes:,}; send one image, compressed if possible, or "
                             "raise CLINASSIST_MAX_DICOM_BYTES.")
    ds = _parse(data)
    _check_transfer_syntax(ds)
    _check_pixel_count(ds, limits)
    return ds


def _parse(data: bytes) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        truncated = _has_short_element(ds)
        for _ in ds.iterall():  # convert every raw element now, so a corrupt value fails here
            pass
    except InvalidDicomError as exc:
        raise DicomRejection("not-dicom", "The upload is not a DICOM Part 10 file (no 'DICM' "
                             "marker after the 128-byte preamble); send the .dcm file as the "
                             "PACS stores it.") from exc
    except Exception as exc:  # pydicom raises many types on a damaged header
        raise DicomRejection("corrupt-header", "The DICOM header is damaged and cannot be "
                             "parsed; re-export the image from the PACS or modality.") from exc
    if truncated:
        raise DicomRejection("truncated", "The file ends inside a data element: it was cut short "
                             "in transfer or a length in its header is damaged; send the complete "
                             "file again.")
    return ds


def _has_short_element(ds: Dataset) -> bool:
    """pydicom keeps an element the file ends inside of, with fewer bytes than it declares."""
    for tag in ds.keys():
        raw = ds.get_item(tag)
        if (isinstance(raw, RawDataElement) and raw.value is not None
                and raw.length != UNDEFINED_LENGTH and len(raw.value) < raw.length):
            return True
    return False


def _check_transfer_syntax(ds: Dataset) -> None:
    uid = ds.file_meta.get("TransferSyntaxUID")
    if not isinstance(uid, UID) or not uid.is_valid:  # a damaged value may be a list
        raise DicomRejection("corrupt-header", "The file meta information has no valid Transfer "
                             "Syntax UID (0002,0010); re-export the image from the PACS.")
    try:
        decodable = get_decoder(uid).is_available
    except NotImplementedError:
        decodable = False
    if not decodable:
        raise DicomRejection("unsupported-transfer-syntax", f"Pixel data in the transfer syntax "
                             f"'{uid.name}' ({uid}) cannot be decoded here; send the image "
                             "uncompressed (Explicit VR Little Endian) or as JPEG 2000, JPEG-LS, "
                             "JPEG or RLE Lossless.")


def _header_int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword)
    if value in (None, "") and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise DicomRejection("corrupt-header", f"The header attribute {keyword} is missing or not "
                             "a whole number; re-export the image from the PACS.") from exc


def _check_pixel_count(ds: Dataset, limits: Limits) -> None:
    if "PixelData" not in ds:
        return
    count = (_header_int(ds, "Rows") * _header_int(ds, "Columns")
             * _header_int(ds, "NumberOfFrames", 1) * _header_int(ds, "SamplesPerPixel", 1))
    if count > limits.max_pixels:
        raise DicomRejection("too-large", f"The header declares {count:,} pixel values, above the "
                             f"limit of {limits.max_pixels:,}; send a single radiograph or raise "
                             "CLINASSIST_MAX_DICOM_PIXELS.")


def radiograph_pixels(ds: Dataset) -> np.ndarray:
    """The display-ready radiograph: float32 (Rows, Columns) in [0, 1], 1 = white (bone)."""
    _check_single_grey_frame(ds)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # each codec raises its own types on a damaged stream
        raise DicomRejection("corrupt-pixel-data", "The pixel data cannot be decoded (damaged or "
                             "not matching its header); re-export the image from the PACS.") from exc
    if stored.shape != (ds.Rows, ds.Columns):  # pydicom returns whole frames beyond the first
        raise DicomRejection("corrupt-pixel-data", "The pixel data holds more values than one "
                             "Rows x Columns frame; re-export the image from the PACS.")
    try:
        values = _modality_lut(stored, ds)
        if not np.isfinite(values).all():
            raise ValueError("Rescale Slope or Intercept is not a finite number")
        display = _voi_lut(values, ds)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, NotImplementedError,
            struct.error) as exc:  # struct: LUT Data shorter than its LUT Descriptor says
        raise DicomRejection("corrupt-header", "The Modality LUT or VOI LUT attributes are "
                             "malformed, so the image cannot be shown as intended; re-export it "
                             "from the modality or PACS.") from exc
    if ds.PhotometricInterpretation == MONOCHROME1:
        np.subtract(1.0, display, out=display)
    return display.astype(np.float32, copy=False)


def _check_single_grey_frame(ds: Dataset) -> None:
    if "PixelData" not in ds:
        raise DicomRejection("missing-pixel-data", "The instance has no Pixel Data (7FE0,0010): it "
                             "is not an image, or the file was cut short before it; send the "
                             "radiograph image itself.")
    frames = _header_int(ds, "NumberOfFrames", 1)
    if frames > 1:
        raise DicomRejection("multi-frame", f"The instance holds {frames} frames; only single-frame "
                             "radiographs can be triaged, send the chest radiograph as one image.")
    photometric = ds.get("PhotometricInterpretation") or "of unknown photometric interpretation"
    if _header_int(ds, "SamplesPerPixel", 1) != 1 or photometric not in GREYSCALE:
        raise DicomRejection("colour", f"The image is {photometric}; only grey-scale MONOCHROME1 "
                             "or MONOCHROME2 radiographs can be triaged, send the original "
                             "radiograph.")
    bits = _header_int(ds, "BitsStored")
    if bits != 8 and not 10 <= bits <= 16:
        raise DicomRejection("bits-stored", f"The image stores {bits} bits per pixel; radiographs "
                             "with 8 or 10 to 16 bits can be triaged, send the original radiograph.")


def _modality_lut(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(stored, ds).astype(np.float32)
    slope = float(ds.get("RescaleSlope") or 1)  # absent, empty or an invalid 0: identity
    intercept = float(ds.get("RescaleIntercept") or 0)
    values = stored.astype(np.float32)
    values *= np.float32(slope)
    values += np.float32(intercept)
    return values


def _voi_lut(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """The float32 `values` as [0, 1] display values, float32; `values` may be overwritten."""
    if ds.get("VOILUTSequence"):
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        mapped = apply_voi(np.rint(values).astype(np.int32), ds, index=0)
        return mapped.astype(np.float32) / np.float32(2**depth - 1)
    window = _first_window(ds)
    if window is not None:
        return _window(values, *window, str(ds.get("VOILUTFunction") or "LINEAR").upper())
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    values -= np.float32(low)
    values /= np.float32(high - low)
    return values


def _first_window(ds: Dataset) -> tuple[float, float] | None:
    """The first Window Center/Width pair; one not finite or at most one value wide is ignored."""
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre in (None, "") or width in (None, ""):
        return None
    centre, width = (float(v[0] if isinstance(v, MultiValue) else v) for v in (centre, width))
    return (centre, width) if math.isfinite(centre) and 1 < width < math.inf else None


def _window(x: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT) and C.11.2.1.3 (SIGMOID), output in [0, 1];
    the linear ones overwrite `x` (a radiograph is tens of megabytes as float32: each
    temporary is a pass over memory and page faults)."""
    if function == "SIGMOID":  # 1 / (1 + exp(-4 (x - c) / w)), written so it cannot overflow
        return 0.5 * (1 + np.tanh(2 * (x - centre) / width))
    offset, scale = (centre, width) if function == "LINEAR_EXACT" else (centre - 0.5, width - 1)
    x -= offset
    x /= scale
    x += 0.5
    return np.clip(x, 0, 1, out=x)


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from Pixel Spacing, else Imager Pixel Spacing (at the
    detector); None when both are missing, malformed or not positive."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            row, column = (float(v) for v in ds.get(keyword))
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0:
            return row, column
    return None
