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

from clinassist.serving.storage.sqlite_file import (  # noqa: F401 (the stores import them here)
    BUSY_TIMEOUT_S,
    DAMAGED,
    LOCKED,
    RESTORE,
    DatabaseUnavailable,
    create_private,
    named_errors,
    private_dir,
    unavailable,
)

SECURITY_DB = "security.db"  # users, trusted JWT issuers, seen JWT IDs


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
