"""A store's tables, wherever they live, behind `read()` and `write()`.

With SQLite (the default) a store is one file in `CLINASSIST_HOME` (mode 0600), and `write()`
is `BEGIN IMMEDIATE`: it takes the file's write lock before reading, so read-then-write steps
cannot race, while readers never wait (WAL). With PostgreSQL (`CLINASSIST_DATABASE_URL`) a
store is one schema of the database, named after it; `write()` is a READ COMMITTED transaction,
so a step that reads before it writes locks what it reads (`FOR UPDATE`, `SKIP LOCKED` for a
claim), or serialises with every other writer of its kind with `write(serialised=True)`, a
transaction-scoped advisory lock (`pg_advisory_xact_lock`), held by writers on any machine.

Opening a store brings its tables to the newest migration (`serving/storage/migrations`).
A missing, locked or damaged SQLite file, or a database server that cannot be reached, is a
`DatabaseUnavailable` naming it and the remedy, never a traceback.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import DBAPIError, OperationalError

from clinassist.serving.storage.sqlite_file import (
    RESTORE,
    DatabaseUnavailable,
    create_private,
    private_dir,
    unavailable,
)
from clinassist.serving.storage import engine as engines
from clinassist.serving.storage.ddl import append_only, missing_append_only
from clinassist.serving.storage.migrate import upgrade


@dataclass(frozen=True)
class StoreSchema:
    """What names one store's tables: its alembic branch and PostgreSQL schema (`name`), and
    its SQLite file, relative to the home."""

    name: str
    sqlite_file: str


class Store:
    """One store's tables, migrated to the newest revision when opened.

    `required_because` says why a SQLite file must already exist (other state refers to it):
    then a missing file is an error rather than a new, empty database.
    """

    def __init__(self, home: Path, schema: StoreSchema, *,
                 required_because: str | None = None) -> None:
        self.schema = schema
        url = engines.database_url()
        if url is None:
            self.path: Path | None = home / schema.sqlite_file
            self.location = str(self.path)
            if required_because and not self.path.exists():
                raise DatabaseUnavailable(
                    f"{self.path} is missing, but {required_because}: {RESTORE}")
            with self._named_errors():
                private_dir(self.path.parent)
                create_private(self.path)
            raw = engines.sqlite_engine(self.path)
            self._engine: Engine = raw
            self._queue: Callable[[], AbstractContextManager] = partial(
                engines.queued_sqlite_writer, self.path)
            self._writer = raw.execution_options(**{engines.IMMEDIATE: True})
        else:
            self.path = None
            self.location = f"schema {schema.name} of {engines.describe(url)}"
            raw = engines.postgresql_engine(url)
            self._engine = self._writer = raw.execution_options(
                schema_translate_map={None: schema.name})
            self._queue = nullcontext  # PostgreSQL's writers wait on row locks, not polls
        with self._named_errors():
            upgrade(raw, schema.name, self.path)

    @property
    def postgresql(self) -> bool:
        return self.path is None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads, its transaction rolled back at the end."""
        with self._named_errors(), self._engine.connect() as connection:
            yield connection

    @contextmanager
    def write(self, serialised: bool = False) -> Iterator[Connection]:
        """A transaction that commits at the end, or rolls back on error. `serialised`: one
        such transaction of this store at a time, across processes and machines."""
        with self._queue(), self._named_errors(), self._writer.begin() as connection:
            if serialised and self.postgresql:
                connection.execute(select(func.pg_advisory_xact_lock(self._lock_key())))
            yield connection

    def keep_append_only(self, table: str, message: str) -> None:
        """Put back the triggers that keep `table` append-only, if someone dropped them."""
        schema = self.schema.name if self.postgresql else None
        with self.read() as db:
            missing = missing_append_only(db, table, schema)
        if missing:
            with self.write(serialised=True) as db:
                if schema is not None:
                    db.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
                append_only(db, table, message)

    def _lock_key(self) -> int:
        digest = hashlib.sha256(f"clinassist:{self.schema.name}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @contextmanager
    def _named_errors(self) -> Iterator[None]:
        """A missing, locked or damaged file, or an unreachable server, by name; other errors
        (a constraint, a bad statement) pass."""
        try:
            yield
        except (DBAPIError, OSError) as error:
            original = error.orig if isinstance(error, DBAPIError) else error
            if original is None:
                raise
            if self.path is not None:
                if isinstance(original, (OSError, sqlite3.Error)):
                    translated = unavailable(self.path, original)
                    if translated is not None:
                        raise translated from None
            elif isinstance(error, OperationalError):
                raise DatabaseUnavailable(
                    f"cannot use the database ({self.location}: {_first_line(original)}): check "
                    f"{engines.DATABASE_URL_ENV} and that the server runs and is reachable"
                ) from None
            raise


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
