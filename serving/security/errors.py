"""Mistakes an operator can fix, reported by the CLI as one message each."""

from __future__ import annotations

from clinassist.errors import ClinassistError


class SecurityError(ClinassistError):
    """Base of every error raised by the security layer."""


class UnknownRoleError(SecurityError):
    """A role name that is not in the role table."""


class UnknownPermissionError(SecurityError):
    """A permission name that is not in the role table."""


class InvalidUserNameError(SecurityError):
    """A user name that cannot identify an account."""


class UserExistsError(SecurityError):
    """A user name already taken (names are never reused, so audit actors stay unique)."""


class UnknownUserError(SecurityError):
    """A user name with no account."""


class PublicKeyError(SecurityError):
    """A JWT issuer key that cannot be used to verify signatures."""


class SiteKeyError(SecurityError):
    """A site key file that is damaged or readable by others."""
