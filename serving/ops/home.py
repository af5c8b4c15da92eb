"""What lives in a `CLINASSIST_HOME`: its databases, files that must be copied with a
database, and runtime files that are not state. Backup, restore and the start check read it."""

from __future__ import annotations

import os
from pathlib import Path

from clinassist.serving.gateway.catchup import CHANGES_DB
from clinassist.serving.gateway.queue import QUEUE_DB, QUEUE_DIR
from clinassist.serving.medication.kb import KB_FILE, REBUILD
from clinassist.serving.security import database
from clinassist.serving.security.audit import AUDIT_DB, AuditTrail
from clinassist.serving.storage.engine import WRITERS_SUFFIX  # the writers' lock: runtime

DATABASE_SUFFIXES = (".db", ".sqlite")  # how every store names its file
SQLITE_MAGIC = b"SQLite format 3\x00"
REMEDIES = {Path(KB_FILE): REBUILD}  # a damaged database is otherwise restored from backup
QUEUE = Path(QUEUE_DIR, QUEUE_DB)
# The catch-up position only passes instances already queued, so it is copied before the queue:
# a restored gateway reads a few changes again and finds them queued, rather than skip some.
CHANGES = Path(QUEUE_DIR, CHANGES_DB)
# The received instances of queued jobs: a job row names its file, and the file goes once the
# job is triaged, so the two are copied together under the queue's write lock.
QUEUE_FILES = Path(QUEUE_DIR, "instances")
# BentoML's metrics files (named *.db, not SQLite) and scratch space: rebuilt at every start.
RUNTIME = (Path("bentoml", "prometheus_multiproc_dir"), Path("bentoml", "tmp"))
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")  # folded into the database by the backup API
PARTIAL = ".partial"  # a file or result still being written (renamed into place when complete)


def is_state(relative: Path) -> bool:
    """Whether a file at `relative` in a home is state to keep (not runtime, partial, a SQLite
    journal or a store's writers' lock file)."""
    if any(relative == folder or folder in relative.parents for folder in RUNTIME):
        return False
    if any(part.endswith(PARTIAL) for part in relative.parts):
        return False
    return not relative.name.endswith((*SQLITE_SIDECARS, WRITERS_SUFFIX))


def state_files(home: Path, folder: Path | None = None) -> list[Path]:
    """Regular files under `folder` (default: all of `home`) that are state, relative to home."""
    found = []
    for root, folders, files in os.walk(folder or home):
        base = Path(root).relative_to(home)
        folders[:] = [name for name in folders if is_state(base / name)]
        found += [base / name for name in files if is_state(base / name)
                  and not os.path.islink(os.path.join(root, name))]
    return sorted(found)


def is_database(home: Path, relative: Path) -> bool:
    """Named as a store names its database, or holding one under another name."""
    if relative.suffix in DATABASE_SUFFIXES:
        return True
    try:
        with open(home / relative, "rb") as file:
            return file.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except FileNotFoundError:  # removed since the folder was listed
        return False


def databases(home: Path) -> list[Path]:
    """The databases in `home`, relative to it, the catch-up position before the queue."""
    return sorted((relative for relative in state_files(home) if is_database(home, relative)),
                  key=lambda relative: (relative != CHANGES, relative))


def remedy(relative: Path) -> str:
    return REMEDIES.get(relative, database.RESTORE)


def check(home: Path) -> None:
    """Open every database `home` holds, and its audit trail with the site key, so that a
    missing, locked or damaged one stops a start with its name and remedy."""
    for relative in databases(home):
        database.connect(home / relative, remedy=remedy(relative)).close()
    AuditTrail(home)
