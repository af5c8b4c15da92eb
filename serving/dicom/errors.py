"""Why an uploaded DICOM instance cannot be triaged, with the HTTP status a service answers."""

from __future__ import annotations

from typing import Literal

from clinassist.errors import ClinassistError

RejectionCode = Literal[
    "not-dicom", "truncated", "corrupt-header", "too-large", "unsupported-transfer-syntax",
    "multi-frame", "colour", "bits-stored", "missing-pixel-data", "corrupt-pixel-data",
    "missing-identifiers", "unknown-sop-class", "not-an-image",
]

HTTP_STATUS: dict[str, int] = {
    "not-dicom": 400,
    "truncated": 400,
    "corrupt-header": 400,
    "too-large": 413,
    "unsupported-transfer-syntax": 415,
    "unsupported-media-type": 415,
    "multi-frame": 422,
    "colour": 422,
    "bits-stored": 422,
    "missing-pixel-data": 422,
    "corrupt-pixel-data": 422,
    "missing-identifiers": 422,
    "unknown-sop-class": 422,
    "not-an-image": 422,
}


class DicomRejection(ClinassistError):
    """An instance refused before inference: a machine-readable `code`, a sentence for the
    radiologist (what was wrong, what was expected, what to do) and its `http_status`."""

    def __init__(self, code: RejectionCode, message: str):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown rejection code {code!r}; "
                             f"expected one of {sorted(HTTP_STATUS)}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = HTTP_STATUS[code]
