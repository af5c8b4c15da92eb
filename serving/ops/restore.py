"""`clinassist restore SRC`: put a backup back as the home, or refuse and change nothing.

The files are copied into a hidden folder beside the home and checked there (every SHA-256
against the manifest, the audit trail's hash chain, its rows and head hash against those the
backup recorded); only then does the folder take the home's place. A backup of stores in
PostgreSQL is put back into the configured database with `pg_restore` in one transaction
before that, and its trail checked there. A home that still holds state is kept under a new
name, never deleted; one that a running process holds open is refused unless forced.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clinassist.serving.ops.database_dump import RestoredDatabase, restore_dump
from clinassist.serving.ops.errors import BackupError, RestoreRefused
from clinassist.serving.ops.in_use import Holder, describe, processes_using
from clinassist.serving.ops.manifest import AuditState, FileEntry, Manifest, copy_hashed
from clinassist.serving.ops.verify import audit_state
from clinassist.serving.security import database
from clinassist.serving.storage import database_url


@dataclass(frozen=True)
class RestoreReport:
    home: Path
    manifest: Manifest
    audit: AuditState | None  # as verified in the restored copy
    previous: Path | None  # where the home that was replaced now is
    holders: list[Holder]  # processes that held the replaced home (only with force)
    seconds: float


def restore(source: Path, home: Path, *, force: bool = False) -> RestoreReport:
    started = time.monotonic()
    manifest = Manifest.read(source)
    home = home.absolute()
    holders = processes_using(home) if home.exists() else []
    if holders and not force:
        raise RestoreRefused(f"{home} is in use by {describe(holders)}: stop the services "
                             "first (or pass --force to replace it under them)")
    staging = home.with_name(f".{home.name}.restoring")
    shutil.rmtree(staging, ignore_errors=True)
    database.private_dir(staging)
    try:
        for entry in manifest.files:
            _restore_file(source, staging, entry)
        if manifest.database_dump is None:
            audit = _check_audit(staging, manifest.audit, source)
        else:
            audit = _restore_database(source, manifest).audit
        previous = _replace(home, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RestoreReport(home, manifest, audit, previous, holders, time.monotonic() - started)


def _restore_file(source: Path, staging: Path, entry: FileEntry) -> None:
    relative = entry.relative()
    origin, target = source / relative, staging / relative
    database.private_dir(target.parent)
    try:
        sha256, size = copy_hashed(origin, target)
    except FileNotFoundError:
        raise RestoreRefused(f"{origin} is listed in the backup's manifest but missing: the "
                             "backup is incomplete; restore another backup") from None
    if (sha256, size) != (entry.sha256, entry.size):
        raise RestoreRefused(f"{origin} does not match the backup's manifest (SHA-256 "
                             f"{sha256[:16]}…, expected {entry.sha256[:16]}…): the backup is "
                             "damaged or was altered; restore another backup")
    os.chmod(target, entry.mode)


def _restore_database(source: Path, manifest: Manifest) -> RestoredDatabase:
    url = database_url()
    assert manifest.database_dump is not None
    if url is None:
        raise RestoreRefused(f"{source} holds a PostgreSQL dump of the stores: set "
                             "CLINASSIST_DATABASE_URL to the database to restore it into (with "
                             "every service that uses it stopped)")
    return restore_dump(url, source, manifest.database_dump, manifest.audit)


def _check_audit(staging: Path, recorded: AuditState | None, source: Path) -> AuditState | None:
    """The restored trail must verify and be the one the backup recorded, row for row."""
    if recorded is None:
        return None
    try:
        found = audit_state(staging)
    except (BackupError, database.DatabaseUnavailable) as error:
        raise RestoreRefused(f"the audit trail in {source} cannot be read ({error})") from None
    if not found.intact:
        raise RestoreRefused(f"the audit trail in {source} is broken at {found.reason}; a "
                             "restore must not bring back a falsified trail: restore another "
                             "backup, and keep this one as evidence")
    if (found.rows, found.head_hash) != (recorded.rows, recorded.head_hash):
        raise RestoreRefused(
            f"the audit trail in {source} holds {found.rows} rows ending in "
            f"{found.head_hash[:16]}…, but the backup recorded {recorded.rows} ending in "
            f"{recorded.head_hash[:16]}…: rows were removed or rewritten; restore another backup")
    return found


def _replace(home: Path, staging: Path) -> Path | None:
    """Put `staging` in the home's place; the previous home, unless empty, is kept aside."""
    previous = None
    if home.exists():
        if any(home.iterdir()):
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            previous = home.with_name(f"{home.name}.before-restore-{stamp}")
            os.rename(home, previous)
        else:
            home.rmdir()
    os.rename(staging, home)
    return previous
