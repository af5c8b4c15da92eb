"""SQLite files only the service account can read, shared safely by threads and processes.

Each thread of each process keeps its own connection open: in WAL mode a commit then costs one
fsync instead of several, and readers never wait for the writer. `BEGIN IMMEDIATE` takes the
write lock before reading, so read-then-write steps cannot race.

Every store opens its SQLite file through `connect` (or `Database`, which uses it): a file that
is missing where one is required, locked by another process, or not SQLite at all becomes a
`DatabaseUnavailable` naming the file and the remedy, never a traceback.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from clinassist.errors import ClinassistError

SECURITY_DB = "security.db"  # users, trusted JWT issuers, seen JWT IDs
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


def connect(path: Path, *, read_only: bool = False, remedy: str = RESTORE) -> sqlite3.Connection:
    """A connection to `path` whose schema has been read, so a damaged or locked file fails
    here, by name. Read-only connections may be shared by threads (callers serialise them)."""
    if read_only and not path.is_file():
        raise DatabaseUnavailable(f"{path} is missing: {remedy}")
    with named_errors(path, remedy):
        if read_only:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                         timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        else:
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    return connection


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


class Database:
    """One SQLite file (mode 0600, inherited by its -wal and -shm files) with `schema` applied.

    `required_because` says why the file must already exist (e.g. other state refers to it):
    then a missing file is an error rather than a new, empty database.
    """

    def __init__(self, path: Path, schema: str, *, required_because: str | None = None) -> None:
        self.path = path
        self._local = threading.local()
        if required_because and not path.exists():
            raise DatabaseUnavailable(f"{path} is missing, but {required_because}: {RESTORE}")
        with named_errors(path):
            private_dir(path.parent)
            create_private(path)
            connection = self._connection()
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(schema)

    def query(self, sql: str, parameters: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """Run a read outside any transaction; rows come back as `sqlite3.Row`."""
        return self._connection().execute(sql, parameters)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection holding the write lock; commits, or rolls back on error."""
        connection = self._connection()
        with named_errors(self.path):
            connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection; a forked child opens its own (they must not cross a fork)."""
        if getattr(self._local, "pid", None) != os.getpid():
            self._local.connection = self._open()
            self._local.pid = os.getpid()
        return cast(sqlite3.Connection, self._local.connection)

    def _open(self) -> sqlite3.Connection:
        connection = connect(self.path)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA synchronous = FULL")  # a committed row survives power loss
        return connection
