"""The audit trail of a copied home, checked read-only (a copy is never written to)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from clinassist.serving.ops.errors import BackupError
from clinassist.serving.ops.manifest import AuditState
from clinassist.serving.security import database
from clinassist.serving.security.audit import AUDIT_DB, verify_chain


def audit_state(home: Path) -> AuditState:
    """Rows and head hash of `home/audit.db`, and whether its hash chain holds."""
    path = home / AUDIT_DB
    with closing(database.connect(path, read_only=True)) as db, database.named_errors(path):
        db.row_factory = sqlite3.Row
        try:
            result = verify_chain(db.execute("SELECT * FROM audit_event ORDER BY id"))
        except sqlite3.Error as error:
            raise BackupError(f"{path} holds no readable audit trail ({error})") from None
    reason = None if result.ok else f"row {result.first_broken_id}: {result.reason}"
    return AuditState(result.rows, result.head_hash, result.ok, reason)
