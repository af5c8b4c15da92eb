"""The append-only, hash-chained audit trail of every access (`home/audit.db`, or the schema
`audit` of the PostgreSQL database).

Each row stores `row_hash = sha256(prev_hash + canonical JSON of the row)`, the first row
chaining to GENESIS_HASH. One chain, whoever writes: an append reads the last row and adds the
next inside one serialised write (SQLite's write lock; in PostgreSQL an advisory lock that
writers on every machine take), so two writers never chain to the same row. Rows that threads
of one process hand in at the same time share that write and its commit (group commit); each
`record` still returns only once its own row is committed. Triggers refuse
UPDATE and DELETE (and TRUNCATE in PostgreSQL); `verify()` still finds an edited, deleted or
reordered row if someone dropped them. Removing rows from the end, or
rewriting the whole chain, is only caught against a copy of an earlier `head_hash` kept
elsewhere. Patient IDs are stored only as pseudonyms.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, Table, Text, select

from clinassist.serving.security import database
from clinassist.serving.security.errors import SiteKeyError
from clinassist.serving.security.fhir import audit_event
from clinassist.serving.security.site_key import KEY_FILE, load_site_key, pseudonymise
from clinassist.serving.storage import Store, StoreSchema
from clinassist.serving.storage.group_commit import GroupCommit

AUDIT_DB = "audit.db"
AUDIT = StoreSchema("audit", AUDIT_DB)
GENESIS_HASH = "0" * 64
APPEND_ONLY = "the audit trail is append-only"
OUTCOME_WORDS = ("success", "failure")
Row = Mapping[Any, Any] | sqlite3.Row
HASHED_COLUMNS = ("id", "recorded", "actor", "role", "action", "resource", "outcome",
                  "patients", "detail")

events = Table("audit_event", MetaData(), Column("id", Integer, primary_key=True),
                    *(Column(name, Text) for name in HASHED_COLUMNS[1:]),
                    Column("prev_hash", Text), Column("row_hash", Text))


@dataclass(frozen=True)
class AuditRecord:
    """One access: who (actor, role) did what (action) to which resource, and how it ended."""

    id: int
    recorded: datetime
    actor: str
    role: str
    action: str
    resource: str
    outcome: str  # an HTTP status code, or "success" / "failure"
    patients: tuple[str, ...]  # pseudonyms, never raw patient IDs
    detail: str | None
    row_hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int  # rows checked and found intact
    first_broken_id: int | None
    reason: str | None
    head_hash: str  # hash of the last intact row; keep a copy elsewhere to detect truncation


class AuditTrail:
    """The audit store, pseudonymising with the site key in `home`."""

    def __init__(self, home: Path) -> None:
        """The trail and its key go together: either missing beside the other is lost state
        (the database is created before the key, so a first start cut short is not)."""
        key_path = home / KEY_FILE
        self._db = Store(
            home, AUDIT, required_because=f"{key_path} shows this home kept an audit "
            "trail (starting a new one would hide the loss)" if key_path.exists() else None)
        self._db.keep_append_only("audit_event", APPEND_ONLY)
        self.location = self._db.location
        self.path = self._db.path  # the SQLite file, or None in PostgreSQL
        with self._db.read() as db:
            kept = db.execute(select(events.c.id).limit(1)).first() is not None
        if not key_path.exists() and kept:
            raise SiteKeyError(f"{key_path} is missing, but {self.location} holds pseudonyms "
                               f"made with it (a new key would change every one): "
                               f"{database.RESTORE}")
        self._key = load_site_key(home)
        self._appends = GroupCommit(self._append)  # the rows of concurrent requests, one commit

    def record(self, actor: str, role: str, action: str, resource: str, outcome: int | str,
               patient_ids: str | Iterable[str] = (), detail: str | None = None) -> AuditRecord:
        """Append one row; returns once it is committed. `detail` is stored as given: never put
        identifiers in it."""
        if not (actor and role and action and resource):
            raise ValueError("actor, role, action and resource must all be non-empty")
        ids = [patient_ids] if isinstance(patient_ids, str) else patient_ids
        row: dict[str, Any] = {
            "actor": actor, "role": role, "action": action, "resource": resource,
            "outcome": _outcome(outcome), "detail": detail,
            "patients": " ".join(dict.fromkeys(pseudonymise(str(i), self._key) for i in ids)),
        }
        return self._appends.submit(row)

    def _append(self, rows: list[dict[str, Any]]) -> list[AuditRecord]:
        """Chain `rows` after the last row, in one serialised write that commits them all."""
        with self._db.write(serialised=True) as db:
            last = db.execute(select(events.c.id, events.c.row_hash)
                              .order_by(events.c.id.desc()).limit(1)).first()
            next_id, prev_hash = (1, GENESIS_HASH) if last is None else (last.id + 1,
                                                                         last.row_hash)
            for row in rows:
                row["id"] = next_id
                row["recorded"] = datetime.now(UTC).isoformat(timespec="microseconds")
                row["prev_hash"] = prev_hash
                row["row_hash"] = prev_hash = _chain_hash(row)
                next_id += 1
            db.execute(events.insert(), rows)
        return [_record(row) for row in rows]

    def records(self, since: datetime | None = None) -> list[AuditRecord]:
        """Rows recorded at or after `since` (time-zone aware), oldest first."""
        if since is not None and since.tzinfo is None:
            raise ValueError("since must carry a time zone, e.g. datetime(..., tzinfo=UTC)")
        after = "" if since is None else since.astimezone(UTC).isoformat(timespec="microseconds")
        with self._db.read() as db:
            rows = db.execute(select(events).where(events.c.recorded >= after)
                              .order_by(events.c.id)).mappings()
            return [_record(row) for row in rows]

    def export_fhir(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """The rows as FHIR R4 AuditEvent resources."""
        return [audit_event(record) for record in self.records(since)]

    def verify(self) -> VerifyResult:
        """Walk the chain from the genesis hash; report the first row that does not fit."""
        with self._db.read() as db:
            return verify_chain(db.execute(select(events).order_by(events.c.id))
                                .mappings())


def verify_chain(rows: Iterable[Row]) -> VerifyResult:
    """Walk `rows` (all of them, by id) from the genesis hash; report the first that does not
    fit. Also run on the copy of a trail in a backup, opened read-only."""
    previous_hash, expected_id = GENESIS_HASH, 1
    for row in rows:
        problem = _problem(row, expected_id, previous_hash)
        if problem:
            return VerifyResult(False, expected_id - 1, row["id"], problem, previous_hash)
        previous_hash, expected_id = row["row_hash"], expected_id + 1
    return VerifyResult(True, expected_id - 1, None, None, previous_hash)


def _outcome(outcome: int | str) -> str:
    text = str(outcome)
    if text in OUTCOME_WORDS or (text.isdigit() and 100 <= int(text) <= 599):
        return text
    raise ValueError(f"outcome must be an HTTP status code or one of {', '.join(OUTCOME_WORDS)}, "
                     f"got {outcome!r}")


def _chain_hash(row: Row) -> str:
    content = json.dumps({column: row[column] for column in HASHED_COLUMNS},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((row["prev_hash"] + content).encode("utf-8")).hexdigest()


def _problem(row: Row, expected_id: int, previous_hash: str) -> str | None:
    """Why `row` cannot follow the row whose hash is `previous_hash`, or None if it can."""
    if row["id"] != expected_id:
        return f"row ids jump from {expected_id - 1} to {row['id']}: rows were deleted"
    if row["prev_hash"] != previous_hash:
        return "its link to the row before does not match: rows were deleted, moved or rewritten"
    if _chain_hash(row) != row["row_hash"]:
        return "its contents do not match its hash: the row was edited"
    return None


def _record(row: Row) -> AuditRecord:
    return AuditRecord(row["id"], datetime.fromisoformat(row["recorded"]), row["actor"],
                       row["role"], row["action"], row["resource"], row["outcome"],
                       tuple(row["patients"].split()), row["detail"], row["row_hash"])
