"""Whether the result objects can be written for a source instance: they are filed in its study
and series, cite it as the image measured, and copy its patient and study attributes.

highdicom, which writes them, copies those attributes by the IOD of the source's SOP class
and checks the Specific Character Set it carries over, so an instance it would refuse is
refused here first, with the reason, before any work is done on it.
"""

from __future__ import annotations

from highdicom import SpecificCharacterSetValues
from highdicom._standard_utils import get_sop_class_iod_map  # the IODs highdicom copies by
from highdicom.valuerep import _check_specific_character_set  # highdicom's own rule
from highdicom.valuerep import check_person_name
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import DA, DT, TM

from clinassist.serving.dicom.errors import DicomRejection

IDENTIFYING_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# PS3.3 C.7.3.1.1.1 defined terms of objects that are not images: an SR cannot cite one as
# the source image of a measurement.
NON_IMAGE_MODALITIES = ("SEG", "SR", "DOC", "KO", "PR", "PLAN", "RWV", "REG", "FID", "RTDOSE",
                        "RTPLAN", "RTRECORD", "RTSTRUCT")


def check_referable(ds: Dataset) -> None:
    """Raise DicomRejection unless `ds` has the Type 1 UIDs a result is filed under (PS3.3
    C.7.2.1 General Study, C.7.3.1 General Series, C.12.1 SOP Common), a SOP Class of the
    standard, an image Modality (General Series, Type 1), when present a Specific Character
    Set of defined terms (C.12.1.1.2), and dates, times and person names that parse (PS3.5 6.2:
    DA, TM, DT, PN), as highdicom parses them when it copies them."""
    missing = [keyword for keyword in IDENTIFYING_UIDS
               if not (isinstance(value := ds.get(keyword), str) and UID(value).is_valid)]
    if missing:
        raise DicomRejection("missing-identifiers", f"The header lacks a valid "
                             f"{', '.join(missing)}, so a result could not be filed with its "
                             "study; re-export the image from the PACS.")
    if ds.SOPClassUID not in get_sop_class_iod_map():
        raise DicomRejection("unknown-sop-class", f"The SOP Class UID {ds.SOPClassUID} is not a "
                             "storage class of the DICOM standard; only Computed Radiography "
                             "or Digital X-Ray images are triaged, send the original radiograph.")
    modality = ds.get("Modality")
    if not isinstance(modality, str) or not modality or modality in NON_IMAGE_MODALITIES:
        raise DicomRejection("not-an-image", f"The instance is modality '{modality or 'missing'}'"
                             ", not an image a result can refer to; only chest radiographs (CR "
                             "or DX) are triaged, send the radiograph itself.")
    _check_character_set(ds.get("SpecificCharacterSet"))
    _check_dates_and_times(ds)
    _check_person_names(ds)


def _check_character_set(value: str | MultiValue | None) -> None:
    if not value:
        return
    try:
        _check_specific_character_set(list(value) if isinstance(value, MultiValue) else value)
    except (TypeError, ValueError) as invalid:
        terms = ", ".join(term.value for term in SpecificCharacterSetValues)
        raise DicomRejection("corrupt-header", f"The Specific Character Set {value!r} is not "
                             f"made of the defined terms of PS3.3 C.12.1.1.2 ({terms}); "
                             "re-export the image from the PACS.") from invalid


DATE_TIME_VRS = {"DA": DA, "TM": TM, "DT": DT}


def _check_dates_and_times(ds: Dataset) -> None:
    for element in ds:
        parse = DATE_TIME_VRS.get(element.VR)
        values = element.value if isinstance(element.value, MultiValue) else [element.value]
        try:
            for value in values if parse else []:
                if value not in (None, ""):
                    parse(str(value))
        except (TypeError, ValueError, OverflowError) as invalid:
            name = element.keyword or str(element.tag)
            raise DicomRejection("corrupt-header", f"The header attribute {name} is not a valid "
                                 f"{element.VR} value (PS3.5 6.2); re-export the image from the "
                                 "PACS.") from invalid


COPIED_PERSON_NAMES = ("PatientName", "ReferringPhysicianName")  # PS3.3 C.7.1.1, C.7.2.1


def _check_person_names(ds: Dataset) -> None:
    """One person name each, whose component groups decode (the message never quotes it)."""
    for keyword in COPIED_PERSON_NAMES:
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        try:
            check_person_name(value)
            str(value)
        except (TypeError, ValueError) as invalid:
            raise DicomRejection("corrupt-header", f"The header attribute {keyword} is not one "
                                 "valid person name (PS3.5 6.2.1.2: family^given^middle^prefix"
                                 "^suffix); correct it in the PACS and send the image again.") \
                from invalid
