"""Why an instance cannot be de-identified."""

from __future__ import annotations

from clinassist.errors import ClinassistError


class DeidError(ClinassistError):
    """An instance the de-identifier refuses, or a missing part of its setup; says what to do."""
