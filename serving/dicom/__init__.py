"""DICOM adapters of the serving side: read and check an instance, get its display-ready
pixels, and write the triage result back as an SR and a Secondary Capture."""

from clinassist.serving.dicom.errors import DicomRejection
from clinassist.serving.dicom.header_qc import Finding, check_header, patient_age_years
from clinassist.serving.dicom.pixels import Limits, pixel_spacing, radiograph_pixels, read_instance
from clinassist.serving.dicom.results import TriageResult, build_secondary_capture, build_sr

__all__ = [
    "DicomRejection", "Finding", "Limits", "TriageResult", "build_secondary_capture", "build_sr",
    "check_header", "patient_age_years", "pixel_spacing", "radiograph_pixels", "read_instance",
]
