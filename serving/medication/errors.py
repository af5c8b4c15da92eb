"""Errors of the medication service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from clinassist.errors import ClinassistError


class MedicationError(ClinassistError):
    http_status = 400
    code = "bad-request"

    def __init__(self, reason: str, details: list[dict] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or []

    def body(self) -> dict:
        body: dict = {"error": self.code, "reason": self.reason}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(MedicationError):
    """The request body is not valid JSON or does not have the documented shape."""

    http_status = 422
    code = "invalid-request"


class UnresolvedDrugs(MedicationError):
    """Some medications or allergens match nothing in the knowledge base; none is dropped."""

    http_status = 422
    code = "unresolved-drugs"


class NotJson(MedicationError):
    http_status = 400
    code = "not-json"


class TooLarge(MedicationError):
    http_status = 413
    code = "too-large"


class KnowledgeBaseUnavailable(MedicationError):
    """The KB is missing and cannot be built (no data folder); an operator must fix it."""

    http_status = 503
    code = "kb-unavailable"
