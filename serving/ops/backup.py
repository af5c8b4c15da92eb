"""`clinassist backup DEST`: a consistent copy of a home while its services run.

Databases are copied first, each a snapshot taken with SQLite's online backup API while
writers carry on: the catch-up position before the queue it feeds, and the queue together with
its received instances under the queue's write lock, since a job names its file and the file
goes once the job is triaged. Plain files (results, keys, settings) come after the databases:
a result is complete on disk before any row names it and is never deleted, so every result a
copied row names is in the copy. Partial writes, SQLite journals and BentoML's runtime files
are left out. With the stores in PostgreSQL the databases are one `pg_dump` instead
(`database_dump`), taken while the queue is held still as the home's received instances are
copied. The copy is built in a hidden folder beside DEST, with a manifest (SHA-256 of every
file, the audit trail's rows and head hash) written last, and renamed to DEST when complete.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clinassist.serving.ops import home as layout
from clinassist.serving.ops.database_dump import snapshot
from clinassist.serving.ops.errors import BackupError
from clinassist.serving.ops.manifest import (AuditState, FileEntry, Manifest, copy_hashed,
                                              sha256_file)
from clinassist.serving.ops.verify import audit_state
from clinassist.serving.security import database
from clinassist.serving.storage import database_url


@dataclass(frozen=True)
class BackupReport:
    destination: Path
    manifest: Manifest
    seconds: float


def back_up(home: Path, destination: Path) -> BackupReport:
    """Copy `home` into the new folder `destination`; the audit trail is copied whatever its
    state (the report says whether it verifies)."""
    started = time.monotonic()
    if not home.is_dir():
        raise BackupError(f"there is no home at {home}: set CLINASSIST_HOME to the state folder "
                          "to back up")
    destination = destination.absolute()
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise BackupError(f"{destination} already exists: back up into a new folder")
    if home.resolve() in (destination.resolve(), *destination.resolve().parents):
        raise BackupError(f"{destination} is inside the home {home}: back up somewhere else")
    staging = destination.with_name(f".{destination.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    database.private_dir(staging)
    try:
        url = database_url()
        if url is None:
            entries = [*_copy_databases(home, staging), *_copy_files(home, staging)]
            audit, dump = _audit(staging), None
        else:
            with snapshot(url) as frozen:
                entries = [*_copy_databases(home, staging),
                           *_copy_queued_instances(home, staging)]
                dump, audit = frozen.dump(staging), frozen.audit_state()
            entries += _copy_files(home, staging)
        manifest = Manifest(datetime.now(UTC).isoformat(timespec="seconds"), str(home),
                            tuple(entries), audit, database_dump=dump)
        manifest.write(staging)
        if destination.exists():
            destination.rmdir()
        os.rename(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BackupReport(destination, manifest, time.monotonic() - started)


def _copy_databases(home: Path, staging: Path) -> Iterator[FileEntry]:
    for relative in layout.databases(home):
        if relative == layout.QUEUE:
            yield from _copy_queue(home, staging)
        else:
            yield _copy_database(home, staging, relative)


def _copy_queue(home: Path, staging: Path) -> Iterator[FileEntry]:
    """The queue and its instances, holding the write lock so no job appears or moves on."""
    path = home / layout.QUEUE
    with closing(database.connect(path)) as lock:
        with database.named_errors(path):
            lock.execute("BEGIN IMMEDIATE")
        try:
            yield from _copy_queued_instances(home, staging)
            yield _copy_database(home, staging, layout.QUEUE)
        finally:
            lock.execute("ROLLBACK")


def _copy_queued_instances(home: Path, staging: Path) -> Iterator[FileEntry]:
    """The received instances in the home (the caller holds the queue still)."""
    folder = home / layout.QUEUE_FILES
    if folder.is_dir():
        yield from _copy_each(home, staging, layout.state_files(home, folder))


def _copy_database(home: Path, staging: Path, relative: Path) -> FileEntry:
    """A snapshot through the backup API, stored in rollback-journal mode: one self-contained
    file (the first open after a restore switches it back to WAL)."""
    source_path, target_path = home / relative, staging / relative
    database.private_dir(target_path.parent)
    remedy = layout.remedy(relative)
    with closing(database.connect(source_path, remedy=remedy)) as source, \
            closing(sqlite3.connect(target_path)) as target:
        with database.named_errors(source_path, remedy):
            source.backup(target)
        target.execute("PRAGMA journal_mode = DELETE")
        problems = [row[0] for row in target.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise BackupError(f"{source_path} is damaged ({'; '.join(problems[:3])}): "
                          f"{remedy}, then take the backup again")
    mode = stat.S_IMODE(source_path.stat().st_mode)
    os.chmod(target_path, mode)
    return FileEntry(relative.as_posix(), sha256_file(target_path), target_path.stat().st_size,
                     mode, database=True)


def _copy_files(home: Path, staging: Path) -> Iterator[FileEntry]:
    """Every state file not copied yet (databases and queued instances are)."""
    yield from _copy_each(home, staging, [
        relative for relative in layout.state_files(home) if not (staging / relative).exists()
        and layout.QUEUE_FILES not in relative.parents])


def _copy_each(home: Path, staging: Path, files: list[Path]) -> Iterator[FileEntry]:
    """Copy each file; one removed since it was listed (a received instance once its job is
    triaged) is no longer state and is left out."""
    for relative in files:
        source, target = home / relative, staging / relative
        database.private_dir(target.parent)
        try:
            mode = stat.S_IMODE(source.stat().st_mode)
            sha256, size = copy_hashed(source, target)
        except FileNotFoundError:
            target.unlink(missing_ok=True)
            continue
        os.chmod(target, mode)
        yield FileEntry(relative.as_posix(), sha256, size, mode, database=False)


def _audit(staging: Path) -> AuditState | None:
    return audit_state(staging) if (staging / layout.AUDIT_DB).exists() else None
