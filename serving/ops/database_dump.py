"""Backup and restore of the stores in PostgreSQL (`CLINASSIST_DATABASE_URL`), with PostgreSQL's
own tools.

`pg_dump` copies every store's schema from one snapshot, so they agree with one another as they
were at one instant. That snapshot is taken in a transaction holding the gateway queue's tables
in SHARE mode, so no job appears or moves on while the home's received instances are copied
beside it (a job names its file, and the file goes once the job is triaged); the audit trail's
rows and head hash are read in the same snapshot for the manifest. `pg_restore` puts the dump
back in one transaction (all of it or nothing), then the restored trail is verified against
what the backup recorded. The password travels in the environment (PGPASSWORD), never on a
command line that `ps` shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy.engine import URL

from clinassist.serving.ops.errors import BackupError, RestoreRefused
from clinassist.serving.ops.manifest import AuditState, FileEntry, sha256_file
from clinassist.serving.security.audit import AUDIT, verify_chain
from clinassist.serving.storage.engine import describe

DUMP_FILE = "database.pgdump"  # in the backup folder, beside the home's files
QUEUE_TABLES = ("gateway_queue.job", "gateway_queue.delivery")
Connection = psycopg.Connection[dict[str, Any]]


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """The URL as libpq takes it, without its password, and the environment carrying it."""
    without_password = url.set(drivername="postgresql", password=None)
    environment = {**os.environ}
    if url.password is not None:
        environment["PGPASSWORD"] = str(url.password)
    return without_password.render_as_string(hide_password=False), environment


def _program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed: install PostgreSQL's client programs "
                          "(Debian: postgresql-client) of the server's major version or newer")
    return found


class Snapshot:
    """One REPEATABLE READ transaction of the database, its snapshot exported for pg_dump."""

    def __init__(self, url: URL, connection: Connection, name: str) -> None:
        self.url, self._connection, self.name = url, connection, name

    def dump(self, folder: Path) -> FileEntry:
        """Every store's schema, as this snapshot sees it, into `folder/database.pgdump`."""
        target = folder / DUMP_FILE
        dbname, environment = _libpq(self.url)
        done = subprocess.run([_program("pg_dump"), "--format=custom", "--no-owner",
                               f"--snapshot={self.name}", f"--file={target}",
                               f"--dbname={dbname}"],
                              capture_output=True, text=True, env=environment)
        if done.returncode != 0:
            raise BackupError(f"pg_dump of {describe(self.url)} failed: "
                              f"{done.stderr.strip() or done.returncode}")
        os.chmod(target, 0o600)
        return FileEntry(DUMP_FILE, sha256_file(target), target.stat().st_size, 0o600,
                         database=True)

    def audit_state(self) -> AuditState | None:
        """The trail's rows and head hash in this snapshot (None: no trail in the database)."""
        return _audit_state(self._connection)


@contextmanager
def snapshot(url: URL) -> Iterator[Snapshot]:
    """A snapshot of the database, with the gateway queue held still until the block ends."""
    with _connected(url, BackupError) as connection, connection.transaction():
        connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        present = [table for table in QUEUE_TABLES if _exists(connection, table)]
        if present:  # waits for the queue's writers in flight, then holds the next ones
            connection.execute(f"LOCK TABLE {', '.join(present)} IN SHARE MODE")
        yield Snapshot(url, connection, _value(connection, "SELECT pg_export_snapshot()"))


@dataclass(frozen=True)
class RestoredDatabase:
    audit: AuditState | None


def restore_dump(url: URL, source: Path, entry: FileEntry,
                 recorded: AuditState | None) -> RestoredDatabase:
    """Check the dump against its manifest entry, put it back in one transaction, and verify
    the restored trail is the one the backup recorded."""
    dump = source / DUMP_FILE
    if not dump.is_file():
        raise RestoreRefused(f"{dump} is listed in the backup's manifest but missing: the backup "
                             "is incomplete; restore another backup")
    if (sha256_file(dump), dump.stat().st_size) != (entry.sha256, entry.size):
        raise RestoreRefused(f"{dump} does not match the backup's manifest: the backup is damaged "
                             "or was altered; restore another backup")
    if recorded is not None and not recorded.intact:
        raise RestoreRefused(f"the backup in {source} recorded a broken audit trail "
                             f"({recorded.reason}); a restore must not bring back a falsified "
                             "trail: restore another backup, and keep this one as evidence")
    dbname, environment = _libpq(url)
    done = subprocess.run([_program("pg_restore"), "--clean", "--if-exists", "--no-owner",
                           "--single-transaction", "--exit-on-error", f"--dbname={dbname}",
                           str(dump)], capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        raise RestoreRefused(f"pg_restore into {describe(url)} failed and changed nothing "
                             f"(one transaction): {done.stderr.strip() or done.returncode}")
    with _connected(url, RestoreRefused) as connection:
        found = _audit_state(connection)
    if recorded is not None and (found is None or (found.rows, found.head_hash, found.intact)
                                 != (recorded.rows, recorded.head_hash, True)):
        raise RestoreRefused(f"the database {describe(url)} now holds the backup's dump, but its "
                             f"audit trail ({found}) is not the one the backup recorded "
                             f"({recorded}): the backup was altered; restore another backup")
    return RestoredDatabase(found)


@contextmanager
def _connected(url: URL, failure: type[Exception]) -> Iterator[Connection]:
    dbname, environment = _libpq(url)
    try:
        connection = psycopg.connect(dbname, password=environment.get("PGPASSWORD"),
                                     autocommit=True, row_factory=dict_row)
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "no answer"
        raise failure(f"cannot reach the database {describe(url)} ({reason}): check "
                      "CLINASSIST_DATABASE_URL and that the server runs") from None
    with connection:
        yield connection


def _value(connection: Connection, query: str, *parameters: object) -> Any:
    row = connection.execute(query, parameters).fetchone()
    assert row is not None
    return next(iter(row.values()))


def _exists(connection: Connection, table: str) -> bool:
    return bool(_value(connection, "SELECT to_regclass(%s) IS NOT NULL", table))


def _audit_state(connection: Connection) -> AuditState | None:
    table = f'"{AUDIT.name}".audit_event'
    if not _exists(connection, table):
        return None
    result = verify_chain(connection.execute(f"SELECT * FROM {table} ORDER BY id"))
    reason = None if result.ok else f"row {result.first_broken_id}: {result.reason}"
    return AuditState(result.rows, result.head_hash, result.ok, reason)
