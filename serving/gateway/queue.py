"""The durable job queue: received instances on disk, their jobs and deliveries in SQLite.

A job is `received` (to triage), `processed` (results stored, deliveries pending), `done`,
`rejected` (not a usable instance) or `dead` (out of attempts; `retry` revives it). Each of
its deliveries, one per destination, is `pending`, `delivered` or `dead`. A row is claimed
while a worker holds it; `recover` clears claims when a gateway starts, so one gateway process
owns one home. A received file is deleted once its job is triaged or rejected.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from clinassist.serving.durable import write_synced
from clinassist.serving.security.database import Database, private_dir

QUEUE_DIR, QUEUE_DB = "gateway", "queue.db"
JOB_STATES = ("received", "processed", "done", "rejected", "dead")
SCHEMA = """
CREATE TABLE IF NOT EXISTS job (
    id TEXT PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL UNIQUE,
    calling_ae_title TEXT NOT NULL,
    received_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'received'
        CHECK (state IN ('received', 'processed', 'done', 'rejected', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    result_id TEXT,
    claimed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS job_due ON job (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS delivery (
    job_id TEXT NOT NULL REFERENCES job (id),
    destination TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    claimed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, destination)
);
CREATE INDEX IF NOT EXISTS delivery_due ON delivery (state, next_attempt_at);
"""


@dataclass(frozen=True)
class Job:
    id: str
    sop_instance_uid: str
    calling_ae_title: str
    received_at: float
    state: str
    attempts: int
    last_error: str | None
    result_id: str | None


@dataclass(frozen=True)
class Delivery:
    job_id: str
    destination: str
    attempts: int
    result_id: str


@dataclass(frozen=True)
class Backoff:
    """Retry delays: `first_s`, doubling up to `max_s`; dead after `max_attempts` failures."""

    max_attempts: int
    first_s: float
    max_s: float

    def delay(self, attempts: int) -> float:
        return min(self.first_s * 2 ** (attempts - 1), self.max_s)


class JobQueue:
    def __init__(self, home: Path, backoff: Backoff) -> None:
        self.folder = private_dir(home / QUEUE_DIR)
        self.instances = private_dir(self.folder / "instances")
        self.backoff = backoff
        self._db = Database(self.folder / QUEUE_DB, SCHEMA)

    def recover(self) -> None:
        """Before a gateway starts: forget the claims of one that stopped (or was killed) while
        holding rows, and delete received files no job still needs (never acknowledged, or
        already triaged)."""
        with self._db.transaction() as db:
            db.execute("UPDATE job SET claimed = 0 WHERE claimed = 1")
            db.execute("UPDATE delivery SET claimed = 0 WHERE claimed = 1")
            needed = {f"{row['id']}.dcm" for row in db.execute(
                "SELECT id FROM job WHERE state = 'received' OR (state = 'dead' AND "
                "result_id IS NULL)")}
        for path in self.instances.iterdir():
            if path.name not in needed:
                path.unlink()

    def receive(self, data: bytes, sop_instance_uid: str,
                calling_ae_title: str) -> tuple[str, bool]:
        """Store an instance durably; returns its job id and whether it is new (False: sent
        before, and the earlier job stands)."""
        job_id = uuid.uuid4().hex
        path = self.instance_path(job_id)
        write_synced(path, data)
        with self._db.transaction() as db:
            existing = db.execute("SELECT id FROM job WHERE sop_instance_uid = ?",
                                  (sop_instance_uid,)).fetchone()
            if existing is None:
                db.execute("INSERT INTO job (id, sop_instance_uid, calling_ae_title, received_at)"
                           " VALUES (?, ?, ?, ?)",
                           (job_id, sop_instance_uid, calling_ae_title, time.time()))
        if existing is not None:
            path.unlink()
            return existing["id"], False
        return job_id, True

    def knows(self, sop_instance_uid: str) -> bool:
        """Whether an instance with this SOP Instance UID was received already."""
        return self._db.query("SELECT 1 FROM job WHERE sop_instance_uid = ?",
                              (sop_instance_uid,)).fetchone() is not None

    def backlog(self) -> int:
        """How many received instances wait for triage."""
        return self._db.query("SELECT COUNT(*) FROM job WHERE state = 'received'").fetchone()[0]

    def instance_path(self, job_id: str) -> Path:
        return self.instances / f"{job_id}.dcm"

    def claim_job(self) -> Job | None:
        """The oldest due `received` job, now claimed by the caller."""
        row = self._claim("job", "received", "received_at")
        return None if row is None else _job(row)

    def claim_delivery(self) -> Delivery | None:
        """The oldest due `pending` delivery, now claimed by the caller."""
        row = self._claim("delivery", "pending", "next_attempt_at")
        if row is None:
            return None
        result_id = self._db.query("SELECT result_id FROM job WHERE id = ?",
                                   (row["job_id"],)).fetchone()["result_id"]
        return Delivery(row["job_id"], row["destination"], row["attempts"], result_id)

    def processed(self, job_id: str, result_id: str, destinations: list[str]) -> None:
        """Results stored: queue one delivery per destination (done at once if there are none)."""
        with self._db.transaction() as db:
            db.execute("UPDATE job SET state = ?, result_id = ?, claimed = 0, last_error = NULL "
                       "WHERE id = ?", ("processed" if destinations else "done", result_id, job_id))
            db.executemany("INSERT OR IGNORE INTO delivery (job_id, destination) VALUES (?, ?)",
                           [(job_id, destination) for destination in destinations])
        self.instance_path(job_id).unlink(missing_ok=True)  # the results stand for it now

    def rejected(self, job_id: str, reason: str) -> None:
        with self._db.transaction() as db:
            db.execute("UPDATE job SET state = 'rejected', last_error = ?, claimed = 0 "
                       "WHERE id = ?", (reason, job_id))
        self.instance_path(job_id).unlink(missing_ok=True)

    def job_failed(self, job_id: str, error: str) -> bool:
        """Count a failed triage; returns True when the job is now dead."""
        return self._failed("job", "received", "id = ?", (job_id,), error)

    def delivered(self, job_id: str, destination: str) -> bool:
        """Mark one delivery done; returns True when it was the job's last one."""
        with self._db.transaction() as db:
            db.execute("UPDATE delivery SET state = 'delivered', claimed = 0, last_error = NULL "
                       "WHERE job_id = ? AND destination = ?", (job_id, destination))
            left = db.execute("SELECT COUNT(*) FROM delivery WHERE job_id = ? AND state != "
                              "'delivered'", (job_id,)).fetchone()[0]
            if left == 0:
                db.execute("UPDATE job SET state = 'done' WHERE id = ?", (job_id,))
        return left == 0

    def delivery_failed(self, job_id: str, destination: str, error: str) -> bool:
        """Count a failed delivery; returns True when it (and so its job) is now dead."""
        dead = self._failed("delivery", "pending", "job_id = ? AND destination = ?",
                            (job_id, destination), error)
        if dead:
            with self._db.transaction() as db:
                db.execute("UPDATE job SET state = 'dead', last_error = ?2, attempts = (SELECT "
                           "MAX(attempts) FROM delivery WHERE job_id = ?1) WHERE id = ?1",
                           (job_id, error))
        return dead

    def retry(self, job_id: str | None = None) -> int:
        """Revive dead jobs (one, or all): attempts start again now. Returns how many."""
        where, parameters = ("state = 'dead'", ()) if job_id is None else (
            "state = 'dead' AND id = ?", (job_id,))
        with self._db.transaction() as db:
            jobs = [row["id"] for row in db.execute(f"SELECT id FROM job WHERE {where}",
                                                    parameters)]
            for dead in jobs:
                db.execute("UPDATE delivery SET state = 'pending', attempts = 0, "
                           "next_attempt_at = 0 WHERE job_id = ? AND state = 'dead'", (dead,))
                db.execute("UPDATE job SET state = CASE WHEN result_id IS NULL THEN 'received' "
                           "ELSE 'processed' END, attempts = 0, next_attempt_at = 0 "
                           "WHERE id = ?", (dead,))
        return len(jobs)

    def counts(self) -> dict[str, int]:
        """Jobs per state."""
        rows = self._db.query("SELECT state, COUNT(*) AS n FROM job GROUP BY state")
        return {row["state"]: row["n"] for row in rows}

    def jobs(self, state: str | None = None) -> list[Job]:
        rows = self._db.query("SELECT * FROM job WHERE ?1 IS NULL OR state = ?1 "
                              "ORDER BY received_at", (state,))
        return [_job(row) for row in rows]

    def _claim(self, table: str, state: str, order: str) -> sqlite3.Row | None:
        with self._db.transaction() as db:
            row = db.execute(f"SELECT rowid AS row_id, * FROM {table} WHERE state = ? AND "
                             f"claimed = 0 AND next_attempt_at <= ? ORDER BY {order} LIMIT 1",
                             (state, time.time())).fetchone()
            if row is not None:
                db.execute(f"UPDATE {table} SET claimed = 1 WHERE rowid = ?", (row["row_id"],))
        return row

    def _failed(self, table: str, state: str, where: str, key: tuple, error: str) -> bool:
        with self._db.transaction() as db:
            attempts = db.execute(f"SELECT attempts FROM {table} WHERE {where}",
                                  key).fetchone()["attempts"] + 1
            dead = attempts >= self.backoff.max_attempts
            db.execute(f"UPDATE {table} SET attempts = ?, next_attempt_at = ?, last_error = ?, "
                       f"claimed = 0, state = ? WHERE {where}",
                       (attempts, time.time() + self.backoff.delay(attempts), error,
                        "dead" if dead else state, *key))
        return dead


def _job(row: sqlite3.Row) -> Job:
    return Job(row["id"], row["sop_instance_uid"], row["calling_ae_title"], row["received_at"],
               row["state"], row["attempts"], row["last_error"], row["result_id"])
