"""Header checks that an instance is what the model was validated for: a frontal chest radiograph.

A blocking finding means no score is given; the radiologist gets the reason instead. A
non-blocking finding is passed on as a caution. Messages never quote patient identifiers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)

MODALITIES = ("CR", "DX")
SOP_CLASSES = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
               DigitalXRayImageStorageForProcessing)
FRONTAL_VIEWS = ("AP", "PA")
AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}  # PS3.5 AS


@dataclass(frozen=True)
class Finding:
    """One header check result: a machine-readable `code`, a sentence for the radiologist ending
    with what to do, and whether it stops the model from scoring the image (`blocking`)."""

    code: str
    message: str
    blocking: bool


def check_header(ds: Dataset) -> list[Finding]:
    """Every header finding for `ds`, blocking ones first."""
    findings = [finding for rule in RULES if (finding := rule(ds)) is not None]
    return sorted(findings, key=lambda finding: not finding.blocking)


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword) or "").strip().upper()


def _values(ds: Dataset, keyword: str) -> list[str]:
    """A multi-valued attribute as upper-case strings (pydicom gives a str when VM is 1)."""
    value = ds.get(keyword) or []
    return [str(v).strip().upper() for v in ([value] if isinstance(value, str) else value)]


def _modality(ds: Dataset) -> Finding | None:
    modality = _text(ds, "Modality")
    if modality in MODALITIES:
        return None
    return Finding("modality", f"The image is modality '{modality or 'missing'}'; only chest "
                   "radiographs (CR or DX) are triaged. Send the frontal chest radiograph.", True)


def _sop_class(ds: Dataset) -> Finding | None:
    uid = ds.get("SOPClassUID")
    if uid in SOP_CLASSES:
        return None
    kind = f"a '{uid.name}'" if isinstance(uid, UID) and uid else "of no known SOP class"
    return Finding("sop-class", f"The instance is {kind}; only Computed Radiography or "
                   "Digital X-Ray images are triaged. Send the original radiograph, not a "
                   "report, screenshot or other object.", True)


def _for_processing(ds: Dataset) -> Finding | None:
    if (ds.get("SOPClassUID") != DigitalXRayImageStorageForProcessing
            and _text(ds, "PresentationIntentType") != "FOR PROCESSING"):
        return None
    return Finding("for-processing", "The image is raw detector data 'for processing'; the "
                   "model was trained on processed images, so its score may be less reliable. "
                   "Send the 'for presentation' image if the modality produced one.", False)


def _body_part(ds: Dataset) -> Finding | None:
    body_part = _text(ds, "BodyPartExamined")
    if body_part in ("", "CHEST"):
        return None
    return Finding("body-part", f"The body part examined is '{body_part}'; only chest "
                   "radiographs (CHEST) are triaged. Send the chest radiograph of the study.", True)


def _view_position(ds: Dataset) -> Finding | None:
    view = _text(ds, "ViewPosition")
    if view in FRONTAL_VIEWS:
        return None
    if not view:
        return Finding("view-position-unknown", "The header does not give the view position; "
                       "the image is assumed frontal (AP or PA) and checked on its pixels.", False)
    return Finding("view-position", f"The view position is '{view}'; only frontal (AP or PA) "
                   "chest radiographs are triaged. Send the frontal view of the study.", True)


def _image_type(ds: Dataset) -> Finding | None:
    if "LOCALIZER" not in _values(ds, "ImageType"):
        return None
    return Finding("image-type", "The image is a localizer (scout), not a diagnostic "
                   "radiograph; send the chest radiograph itself.", True)


def _orientation(ds: Dataset) -> Finding | None:
    """PS3.3 C.7.6.1.1.1: the second value is the direction of the columns (downwards on screen);
    for an upright chest radiograph it is towards the feet (F)."""
    orientation = _values(ds, "PatientOrientation")
    if len(orientation) != 2 or orientation[1].startswith("F"):
        return None
    return Finding("orientation", "The header says the image is stored rotated or upside down "
                   "(its columns do not run head to feet); the model expects an upright "
                   "radiograph. Send the image as displayed for reading.", True)


def patient_age_years(ds: Dataset) -> float | None:
    """Patient's Age (nnnD/W/M/Y), else the years from Patient's Birth Date to Study Date."""
    age = _text(ds, "PatientAge")
    if len(age) == 4 and age[:3].isdigit() and age[3] in AGE_UNIT_YEARS:
        return int(age[:3]) * AGE_UNIT_YEARS[age[3]]
    try:
        born, studied = (date(int(d[:4]), int(d[4:6]), int(d[6:8]))
                         for d in (_text(ds, "PatientBirthDate"), _text(ds, "StudyDate")))
    except ValueError:
        return None
    return (studied - born).days / 365.25


RULES: tuple[Callable[[Dataset], Finding | None], ...] = (
    _modality, _sop_class, _for_processing, _body_part, _view_position, _image_type,
    _orientation,
)
