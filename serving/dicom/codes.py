"""Coded concepts of the result objects: DICOM (DCM), SNOMED CT (SCT), UCUM, and project-local
concepts under the private coding scheme 99CLINASSIST (PS3.16 section 8: a "99" prefix)."""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

LOCAL = "99CLINASSIST"
LOCAL_SCHEME = CodingSchemeIdentificationItem(
    designator=LOCAL, name="clinassist triage concepts", responsible_organization="clinassist")

PLAIN_CHEST_XRAY = CodedConcept("399208008", "SCT", "Plain chest X-ray")
PNEUMONIA = CodedConcept("233604007", "SCT", "Pneumonia")
PRESENCE = {True: codes.SCT.Present, False: codes.SCT.Absent}
PROBABILITY = codes.DCM.Probability
PROBABILITY_UNIT = CodedConcept("{probability}", "UCUM", "probability")
DECISION_THRESHOLD = CodedConcept("DECISION-THRESH", LOCAL, "Decision threshold")
OPERATING_POINT = CodedConcept("OPERATING-POINT", LOCAL, "Operating point")

TRIAGE_PRIORITY = CodedConcept("TRIAGE-PRIORITY", LOCAL, "Triage priority")
STUDY_PRIORITY = CodedConcept("STUDY-PRIORITY", LOCAL, "Study worklist priority")
PRIORITY = {"urgent": CodedConcept("URGENT", LOCAL, "Urgent"),
            "routine": CodedConcept("ROUTINE", LOCAL, "Routine")}

INPUT_CHECK = CodedConcept("INPUT-QC", LOCAL, "Input quality control")
INPUT_CHECK_OUTCOME = {True: CodedConcept("QC-PASSED", LOCAL, "Passed"),
                       False: CodedConcept("QC-FAILED", LOCAL, "Failed")}
INPUT_CHECK_FINDING = CodedConcept("INPUT-QC-FINDING", LOCAL, "Input quality control finding")
COMMENT = codes.DCM.Comment


def input_check_reason(code: str) -> CodedConcept:
    """A header or pixel QC finding code (e.g. "view-position") as a local concept."""
    return CodedConcept(code, LOCAL, code)
