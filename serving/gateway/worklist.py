"""Study priorities for the reading worklist (`home/gateway/worklist.db`).

A study's priority only ever rises: a routine result after an urgent one leaves it urgent
(field guide 1: good triage products never lower a priority). Studies without a triage
score (every instance failed QC) are `unscored`. When read, a study that has waited longer
than `max_wait` is escalated to urgent, so priority ordering cannot starve routine studies.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from clinassist.serving.security.database import Database

WORKLIST_DB = "worklist.db"
MAX_WAIT_ENV = "CLINASSIST_WORKLIST_MAX_WAIT_MINUTES"
DEFAULT_MAX_WAIT = timedelta(minutes=60)
RANK = {"unscored": 0, "routine": 1, "urgent": 2}
PRIORITY = {rank: name for name, rank in RANK.items()}
SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    study_instance_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    accession_number TEXT NOT NULL,
    rank INTEGER NOT NULL,
    probability REAL,
    first_received REAL NOT NULL,
    result_id TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Entry:
    """One study on the worklist; `priority` already includes any escalation."""

    study_instance_uid: str
    patient_id: str
    accession_number: str
    priority: str
    escalated: bool
    probability: float | None
    waiting_minutes: float
    result_id: str


def raised(current: str | None, flag: str | None) -> str:
    """A study's priority after a new result: the higher of the two, never lower."""
    return max(current or "unscored", flag or "unscored", key=RANK.__getitem__)


def max_wait_from_env() -> timedelta:
    """$CLINASSIST_WORKLIST_MAX_WAIT_MINUTES, or one hour."""
    minutes = os.environ.get(MAX_WAIT_ENV)
    return DEFAULT_MAX_WAIT if minutes is None else timedelta(minutes=float(minutes))


class Worklist:
    def __init__(self, home: Path, max_wait: timedelta = DEFAULT_MAX_WAIT) -> None:
        self.max_wait = max_wait
        self._db = Database(home / "gateway" / WORKLIST_DB, SCHEMA)

    def record(self, study_instance_uid: str, patient_id: str, accession_number: str,
               flag: str | None, probability: float | None, received_at: float,
               result_id: str) -> None:
        """Add one triaged instance to its study; the priority is raised, never lowered.
        Recording the same instance again changes nothing."""
        rank = RANK[flag or "unscored"]
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO study VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                "ON CONFLICT (study_instance_uid) DO UPDATE SET rank = MAX(rank, ?4), "
                "probability = MAX(COALESCE(probability, ?5), COALESCE(?5, probability)), "
                "first_received = MIN(first_received, ?6), "
                "result_id = CASE WHEN ?4 >= rank THEN ?7 ELSE result_id END",
                (study_instance_uid, patient_id, accession_number, rank, probability,
                 received_at, result_id))

    def entries(self, now: float | None = None) -> list[Entry]:
        """Urgent (and escalated) studies first, then the longest waiting."""
        now = time.time() if now is None else now
        entries = [self._entry(row, now) for row in self._db.query("SELECT * FROM study")]
        return sorted(entries, key=lambda e: (e.priority != "urgent", -e.waiting_minutes))

    def entry(self, study_instance_uid: str, now: float | None = None) -> Entry | None:
        row = self._db.query("SELECT * FROM study WHERE study_instance_uid = ?",
                             (study_instance_uid,)).fetchone()
        return None if row is None else self._entry(row, time.time() if now is None else now)

    def _entry(self, row: sqlite3.Row, now: float) -> Entry:
        waited = now - row["first_received"]
        escalated = row["rank"] < RANK["urgent"] and waited >= self.max_wait.total_seconds()
        return Entry(row["study_instance_uid"], row["patient_id"], row["accession_number"],
                     "urgent" if escalated else PRIORITY[row["rank"]], escalated,
                     row["probability"], round(waited / 60, 1), row["result_id"])
