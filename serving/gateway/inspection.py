"""What an instance must be before the gateway takes it in: a readable data set of the SOP
Class and Instance it was sent as, with valid IS and DS values and the whole of its pixel data.
Otherwise the sender gets a Storage failure status (PS3.4 B.2.3, Table B.2-1) with an error
comment that says what is wrong and never quotes a value of the data set.

Parsing, and what the result objects need (the UIDs a result is filed under, a standard SOP
class, an image modality, a defined character set, valid dates and times), are checked by the
imaging pipeline's own functions (`read_instance`, `check_referable`), so the gateway and the
HTTP API refuse the same instances; what the pipeline only finds at triage (multi-frame,
colour, not a chest radiograph) is a triage outcome, not a refused C-STORE.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.encaps import generate_fragments
from pydicom.multival import MultiValue
from pydicom.pixels.utils import get_expected_length
from pydicom.valuerep import IS, DSdecimal, DSfloat

from clinassist.errors import ClinassistError
from clinassist.serving.dicom import DicomRejection, Limits, read_instance
from clinassist.serving.dicom.referable import check_referable

ERROR_COMMENT_MAX = 64  # (0000,0902) Error Comment is LO
NUMBERS = {"IS": IS, "DS": (DSfloat, DSdecimal)}  # what pydicom reads a valid value as


class StoreStatus(enum.IntEnum):
    """C-STORE response statuses (PS3.4 Table B.2-1). The Cxxx codes are ours within "Error:
    Cannot understand", one per kind of fault, so a sender's log tells them apart."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    INVALID_VALUE = 0xC001
    INVALID_IDENTIFIERS = 0xC002
    INVALID_PIXEL_DATA = 0xC003
    TOO_LARGE = 0xC004


class Refused(ClinassistError):
    """An instance the gateway does not take in: the status and error comment for the sender."""

    def __init__(self, status: StoreStatus, comment: str) -> None:
        if len(comment) > ERROR_COMMENT_MAX:
            raise ValueError(f"error comment over {ERROR_COMMENT_MAX} characters: {comment!r}")
        super().__init__(comment)
        self.status, self.comment = status, comment


# The pipeline reader's rejections, as a status and a comment short enough for (0000,0902).
REJECTIONS: dict[str, tuple[StoreStatus, str]] = {
    "not-dicom": (StoreStatus.CANNOT_UNDERSTAND, "not a DICOM data set"),
    "truncated": (StoreStatus.CANNOT_UNDERSTAND, "data set ends inside an element"),
    "corrupt-header": (StoreStatus.CANNOT_UNDERSTAND,
                       "damaged header: an element cannot be read or parsed"),
    "too-large": (StoreStatus.TOO_LARGE, "over CLINASSIST_MAX_DICOM_BYTES or _PIXELS"),
    "unsupported-transfer-syntax": (StoreStatus.CANNOT_UNDERSTAND,
                                    "pixel data's transfer syntax cannot be decoded here"),
    "missing-identifiers": (StoreStatus.INVALID_IDENTIFIERS,
                            "missing or invalid Study, Series, SOP Instance or Class UID"),
    "unknown-sop-class": (StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                          "SOP Class UID is not a standard storage class"),
    "not-an-image": (StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                     "Modality is missing or not an image"),
}


@dataclass(frozen=True)
class Inspected:
    """An instance fit to be queued, and what the intake records of it."""

    sop_instance_uid: str
    patient_id: str


def inspect(data: bytes, sop_class_uid: str, sop_instance_uid: str,
            limits: Limits) -> Inspected:
    """Check a DICOM Part 10 file sent as (`sop_class_uid`, `sop_instance_uid`); raises
    Refused with what is wrong."""
    try:
        ds = read_instance(data, limits)
        check_referable(ds)
    except DicomRejection as rejection:
        status, comment = REJECTIONS.get(rejection.code,
                                         (StoreStatus.CANNOT_UNDERSTAND, rejection.code))
        raise Refused(status, comment) from None
    if ds.SOPClassUID != sop_class_uid:
        raise Refused(StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                      "SOP Class UID differs from the request's")
    if ds.SOPInstanceUID != sop_instance_uid:
        raise Refused(StoreStatus.INVALID_IDENTIFIERS,
                      "SOP Instance UID differs from the request's")
    _check_numbers(ds)
    _check_pixel_data(ds)
    return Inspected(str(ds.SOPInstanceUID), str(ds.get("PatientID") or ""))


def _check_numbers(ds: Dataset) -> None:
    """Every IS and DS value is a number (PS3.5 6.2); pydicom keeps a string it cannot read,
    and the pipeline would fail on it later (dates and times are checked by
    `check_referable`)."""
    for element in ds.iterall():
        if element.VR not in NUMBERS or element.value in (None, ""):
            continue
        values = element.value if isinstance(element.value, MultiValue) else [element.value]
        if not all(v in (None, "") or isinstance(v, NUMBERS[element.VR]) for v in values):
            name = element.keyword or "a private element"
            raise Refused(StoreStatus.INVALID_VALUE,
                          f"{element.tag} {name}: invalid {element.VR} value"[:ERROR_COMMENT_MAX])


def _check_pixel_data(ds: Dataset) -> None:
    """Pixel Data (7FE0,0010) is there whole: native, as long as the header says; encapsulated,
    a readable sequence of fragments (PS3.5 A.4). The codestream itself is decoded at triage."""
    if "PixelData" not in ds:
        raise Refused(StoreStatus.INVALID_PIXEL_DATA, "no Pixel Data (7FE0,0010)")
    try:
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            whole = any(fragment for fragment in generate_fragments(ds.PixelData))
        else:
            whole = len(ds.PixelData) >= get_expected_length(ds)
    except Exception:  # pydicom raises several types on a damaged item structure or header
        whole = False
    if not whole:
        raise Refused(StoreStatus.INVALID_PIXEL_DATA,
                      "Pixel Data shorter than its header declares, or damaged")
