"""SQLite files of the home: only the service account may read them, and one that is missing,
locked by another process, or not SQLite at all is a `DatabaseUnavailable` naming the file and
the remedy, never a traceback. (Kept here, below the stores, so the storage layer and the stores
built on it import it without importing each other.)"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clinassist.errors import ClinassistError

BUSY_TIMEOUT_S = 10.0
RESTORE = "restore the home from a backup: `clinassist restore BACKUP` with the services stopped"
LOCKED = ("SQLITE_BUSY", "SQLITE_LOCKED")
DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


class DatabaseUnavailable(ClinassistError):
    """A database file that is missing, locked by another process, or not a SQLite database."""


def unavailable(path: Path, error: sqlite3.Error | OSError,
                remedy: str = RESTORE) -> DatabaseUnavailable | None:
    """What `error` means for the operator of `path`, or None for an error of another kind
    (a constraint, a bad statement) that the caller handles itself."""
    name = getattr(error, "sqlite_errorname", "")
    if name in LOCKED:
        from clinassist.serving.ops.in_use import describe, processes_using

        holders = describe(processes_using(path)) or "another process"
        return DatabaseUnavailable(
            f"{path} is locked by {holders} (waited {BUSY_TIMEOUT_S:g} s): stop the process "
            "holding the lock, then try again")
    if name in DAMAGED:
        return DatabaseUnavailable(f"{path} is not a usable SQLite database ({error}): {remedy}")
    if name == "SQLITE_CANTOPEN" or isinstance(error, OSError):
        return DatabaseUnavailable(
            f"cannot open {path} ({error}): check that it exists and that this user may read and "
            f"write it and its folder, or {remedy}")
    return None


@contextmanager
def named_errors(path: Path, remedy: str = RESTORE) -> Iterator[None]:
    """Turn a missing, locked or damaged `path` into `DatabaseUnavailable`; other errors pass."""
    try:
        yield
    except (sqlite3.Error, OSError) as error:
        translated = unavailable(path, error, remedy)
        if translated is None:
            raise
        raise translated from None


def create_private(path: Path) -> None:
    """Create `path`, empty and mode 0600, unless it exists. An existing database is never
    opened outside SQLite: closing any descriptor of a file drops every POSIX lock the process
    holds on it, SQLite's included, and another process may then checkpoint and delete the WAL
    under it (https://www.sqlite.org/howtocorrupt.html, section 2.2)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if missing and return it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
