"""SQLite files only the service account can read, shared safely by threads and processes.

Each thread of each process keeps its own connection open: in WAL mode a commit then costs one
fsync instead of several, and readers never wait for the writer. `BEGIN IMMEDIATE` takes the
write lock before reading, so read-then-write steps cannot race.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

SECURITY_DB = "security.db"  # users, trusted JWT issuers, seen JWT IDs
BUSY_TIMEOUT_S = 10.0


def private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if missing and return it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


class Database:
    """One SQLite file (mode 0600, inherited by its -wal and -shm files) with `schema` applied."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._local = threading.local()
        private_dir(path.parent)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
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
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA synchronous = FULL")  # a committed row survives power loss
        return connection
