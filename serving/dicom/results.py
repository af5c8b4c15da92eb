"""The two DICOM objects written back for a triaged instance, in the source's study, each in a
new series and naming the model in Contributing Equipment Sequence (PS3.3 C.12.1.1.5):

- `build_sr`: Comprehensive 3D SR, TID 1500 Measurement Report (what IHE AI Results asks for).
- `build_secondary_capture`: the radiograph with the activation map and the score burned in,
  JPEG Baseline compressed (PS3.5 A.4.1, 8.2.1): a twentieth of the uncompressed RGB, which
  every PACS and viewer decodes; it is a picture to look at, not the image to diagnose from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from highdicom import UID, ContributingEquipment
from highdicom.sc import SCImage
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from clinassist.serving.dicom import codes
from clinassist.serving.dicom.render import render

MANUFACTURER = "clinassist"
SERIES_DESCRIPTION = "clinassist triage"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
DISCLAIMER = "Not for diagnosis - triage aid"
PATIENT_STUDY_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                       "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
Flag = Literal["urgent", "routine"]


@dataclass(frozen=True)
class TriageResult:
    """What the model said about one image, or why it said nothing (`qc_passed` False).

    `qc_reasons` are (code, message) pairs: the blocking findings when QC failed, cautions
    (non-blocking findings) when it passed. `cam` is the model's activation map (h, w).
    """

    probability: float | None
    flag: Flag | None
    threshold: float
    model_name: str
    model_version: str
    qc_passed: bool
    qc_reasons: list[tuple[str, str]] = field(default_factory=list)
    cam: np.ndarray | None = None
    study_priority: Flag | None = None  # the study's worklist priority, never lowered
    operating_point: str | None = None  # which calibration and threshold decided, in words

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"the threshold is a probability in [0, 1]; got {self.threshold}")
        if self.qc_passed and (self.probability is None or not 0 <= self.probability <= 1
                               or self.flag not in codes.PRIORITY):
            raise ValueError("a result that passed QC needs a probability in [0, 1] and a flag "
                             f"in {sorted(codes.PRIORITY)}; got {self.probability}, {self.flag!r}")
        if not self.qc_passed and (self.probability is not None or self.flag is not None
                                   or not self.qc_reasons):
            raise ValueError("a result that failed QC has no probability and no flag, and at "
                             "least one (code, message) in qc_reasons saying why")

    @property
    def pneumonia_present(self) -> bool:
        return self.probability is not None and self.probability >= self.threshold

    def as_record(self) -> dict:
        """JSON-ready, every number exact (`from_record` gives back an equal result)."""
        record = asdict(self)
        record["cam"] = None if self.cam is None else {"dtype": str(self.cam.dtype),
                                                         "values": self.cam.tolist()}
        return record

    @classmethod
    def from_record(cls, record: dict) -> TriageResult:
        cam = record["cam"]
        return cls(**{**record, "qc_reasons": [tuple(pair) for pair in record["qc_reasons"]],
                      "cam": None if cam is None else np.asarray(cam["values"], cam["dtype"])})


def _model_equipment(result: TriageResult) -> ContributingEquipment:
    """DCM 109102 Processing Equipment: it processed the source to create this new instance."""
    return ContributingEquipment(
        MANUFACTURER, dicom_codes.DCM.ProcessingEquipment,
        manufacturer_model_name=result.model_name, software_versions=result.model_version,
        contribution_description="chest radiograph pneumonia triage model")


def _new_series(result: TriageResult, series_number: int) -> dict[str, object]:
    """The identifying and equipment attributes both objects share."""
    return dict(series_instance_uid=UID(), series_number=series_number, sop_instance_uid=UID(),
                instance_number=1, manufacturer=MANUFACTURER,
                manufacturer_model_name=result.model_name, software_versions=result.model_version,
                series_description=SERIES_DESCRIPTION,
                contributing_equipment=[_model_equipment(result)])


def _as_evidence(source: Dataset) -> Dataset:
    """`source` (its elements shared, not copied) with the Type 2 Patient and General Study
    attributes it lacks (PS3.3 C.7.1.1, C.7.2.1) present and empty: highdicom copies them into
    each new object of the study and fails on a missing one."""
    evidence = Dataset()
    evidence.update(source)
    for keyword in PATIENT_STUDY_TYPE2:
        if keyword not in evidence:
            setattr(evidence, keyword, None)
    return evidence


def build_sr(source: Dataset, result: TriageResult) -> Comprehensive3DSR:
    """The TID 1500 report: one measurement group on the source image with the pneumonia
    probability, presence and triage priority (when QC passed) and the QC outcome and reasons."""
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=UID(), identifier="pneumonia triage"),
        finding_type=codes.PNEUMONIA,
        algorithm_id=AlgorithmIdentification(result.model_name, result.model_version,
                                             manufacturer=MANUFACTURER),
        source_images=[SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=_measurements(result),
        qualitative_evaluations=_evaluations(result),
    )
    group[0].ContentSequence.extend(  # the sentences behind each QC code, for the reader
        TextContentItem(codes.COMMENT, message, RelationshipTypeValues.CONTAINS)
        for _, message in result.qc_reasons)
    if result.operating_point is not None:
        group[0].ContentSequence.append(TextContentItem(
            codes.OPERATING_POINT, result.operating_point, RelationshipTypeValues.CONTAINS))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=ObserverContext(
            observer_type=dicom_codes.DCM.Device,
            observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
                uid=_device_uid(result), name=result.model_name,
                manufacturer_name=MANUFACTURER, model_name=result.model_name))),
        procedure_reported=codes.PLAIN_CHEST_XRAY,
        imaging_measurements=[group],
    )
    return Comprehensive3DSR(evidence=[_as_evidence(source)], content=report, is_complete=True,
                             coding_schemes=[codes.LOCAL_SCHEME],
                             **_new_series(result, SR_SERIES_NUMBER))


def _device_uid(result: TriageResult) -> str:
    """The same UID for every report of one model version (a device observer identity)."""
    return generate_uid(prefix=None, entropy_srcs=[MANUFACTURER, result.model_name,
                                                   result.model_version])


def _measurements(result: TriageResult) -> list[Measurement]:
    if result.probability is None:
        return []
    return [Measurement(codes.PROBABILITY, result.probability, codes.PROBABILITY_UNIT),
            Measurement(codes.DECISION_THRESHOLD, result.threshold, codes.PROBABILITY_UNIT)]


def _evaluations(result: TriageResult) -> list[QualitativeEvaluation]:
    evaluations = [QualitativeEvaluation(codes.INPUT_CHECK,
                                         codes.INPUT_CHECK_OUTCOME[result.qc_passed])]
    evaluations += [QualitativeEvaluation(codes.INPUT_CHECK_FINDING, codes.input_check_reason(code))
                    for code, _ in result.qc_reasons]
    if result.qc_passed:
        evaluations += [
            QualitativeEvaluation(codes.PNEUMONIA, codes.PRESENCE[result.pneumonia_present]),
            QualitativeEvaluation(codes.TRIAGE_PRIORITY, codes.PRIORITY[result.flag]),
        ]
    if result.study_priority is not None:
        evaluations.append(QualitativeEvaluation(codes.STUDY_PRIORITY,
                                                 codes.PRIORITY[result.study_priority]))
    return evaluations


def build_secondary_capture(source: Dataset, pixels: np.ndarray, result: TriageResult) -> SCImage:
    """An 8-bit RGB picture of the display-ready `pixels` (see `pixels.radiograph_pixels`) with
    the activation map overlaid and the result and disclaimer burned in."""
    picture = render(pixels, result.cam, _caption(result))
    image = SCImage.from_ref_dataset(
        _as_evidence(source), picture, "YBR_FULL_422", 8, "PATIENT",  # PS3.5 8.2.1, CP 1653
        transfer_syntax_uid=JPEGBaseline8Bit,
        patient_orientation=("L", "F"),  # required by highdicom; replaced by the source's below
        **_new_series(result, SC_SERIES_NUMBER))
    # Same pixel grid orientation as the source; empty (Type 2) when the source does not say.
    image.PatientOrientation = source.get("PatientOrientation")
    _copy_anatomy(source, image)
    image.ConversionType = "WSD"  # rendered by a workstation, not digitised from a video signal
    image.BurnedInAnnotation = "YES"
    image.DerivationDescription = "Radiograph with pneumonia activation map and triage result"
    image.SourceImageSequence = [_source_reference(source)]
    _declare_lossy_compression(image, picture.nbytes)
    return image


def _declare_lossy_compression(image: SCImage, uncompressed_bytes: int) -> None:
    """General Image: Lossy Image Compression (PS3.3 C.7.6.1.1.5), so no one takes the picture
    for the source's pixels."""
    (frame,) = generate_frames(image.PixelData)
    image.LossyImageCompression = "01"
    image.LossyImageCompressionRatio = f"{uncompressed_bytes / len(frame):.2f}"
    image.LossyImageCompressionMethod = "ISO_10918_1"


def _copy_anatomy(source: Dataset, image: Dataset) -> None:
    """General Series: Laterality (Type 2C) is needed for a paired body part only, so the body
    part goes along; with neither known, Laterality is left empty (unknown)."""
    for keyword in ("BodyPartExamined", "Laterality"):
        if source.get(keyword):
            setattr(image, keyword, source.get(keyword))
    if "BodyPartExamined" not in image and "Laterality" not in image:
        image.Laterality = None


def _caption(result: TriageResult) -> list[str]:
    reason_codes = ", ".join(code for code, _ in result.qc_reasons)
    if result.qc_passed:
        lines = [f"Pneumonia score {result.probability:.2f} (threshold {result.threshold:.2f}): "
                 f"{result.flag.upper()}"]
        lines += [f"Cautions: {reason_codes}"] if reason_codes else []
    else:
        lines = [f"Not triaged - input check failed: {reason_codes}"]
    model = f"Model {result.model_name} {result.model_version}"
    if result.operating_point is not None:
        model += f", {result.operating_point}"
    return lines + [model, DISCLAIMER]


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [
        CodedConcept.from_code(dicom_codes.DCM.SourceImageForImageProcessingOperation)]
    return item
