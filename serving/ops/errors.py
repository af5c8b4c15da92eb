"""Backup and restore problems an operator can fix, reported by the CLI as one message each."""

from __future__ import annotations

from clinassist.errors import ClinassistError


class BackupError(ClinassistError):
    """A backup that cannot be taken or read (bad destination, not a backup, damaged file)."""


class RestoreRefused(ClinassistError):
    """A restore that would lose or falsify state: a home in use, a damaged backup, a broken
    audit trail. Nothing in the home has been changed."""
