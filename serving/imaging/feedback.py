"""Radiologists' readings of triaged studies, kept to measure and retrain the model
(`CLINASSIST_HOME/imaging_feedback.db`).

Each row links a reading to the triage result it answers, with the model and the operating
point that result was decided with (copied whole, whatever keys they hold), the probability and
the flag. Rows are append-only (SQLite triggers refuse UPDATE and DELETE): a second answer on
the same result is a new row, and the newest answer is the one that counts.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path

from clinassist.serving.security.database import Database

FEEDBACK_DB = "imaging_feedback.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    result_id TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    reading TEXT NOT NULL CHECK (reading IN ('pneumonia', 'no_pneumonia', 'not_assessable')),
    reason TEXT,
    radiologist TEXT NOT NULL,
    received_at TEXT NOT NULL,
    model TEXT NOT NULL,
    operating_point TEXT,
    probability REAL,
    flag TEXT
);
CREATE INDEX IF NOT EXISTS feedback_result ON feedback (result_id, id);
CREATE INDEX IF NOT EXISTS feedback_study ON feedback (study_instance_uid);
CREATE INDEX IF NOT EXISTS feedback_time ON feedback (received_at);
CREATE TRIGGER IF NOT EXISTS feedback_no_update BEFORE UPDATE ON feedback
    BEGIN SELECT RAISE(ABORT, 'feedback is append-only'); END;
CREATE TRIGGER IF NOT EXISTS feedback_no_delete BEFORE DELETE ON feedback
    BEGIN SELECT RAISE(ABORT, 'feedback is append-only'); END;
"""


class Reading(StrEnum):
    """The radiologist's reading of the study for the model's finding."""

    PNEUMONIA = "pneumonia"
    NO_PNEUMONIA = "no_pneumonia"
    NOT_ASSESSABLE = "not_assessable"


@dataclass(frozen=True)
class Feedback:
    """One reading. `model` and `operating_point` are the triage result's own objects (None for
    an operating point on results from before it was recorded)."""

    id: int
    result_id: str
    study_instance_uid: str
    sop_instance_uid: str
    reading: Reading
    reason: str | None
    radiologist: str
    received_at: str  # ISO 8601, UTC
    model: dict
    operating_point: dict | None
    probability: float | None
    flag: str | None

    @property
    def agrees(self) -> bool | None:
        """Whether the model's flag matches the reading; None when either says nothing."""
        if self.flag is None or self.reading == Reading.NOT_ASSESSABLE:
            return None
        return (self.flag == "urgent") == (self.reading == Reading.PNEUMONIA)

    def public(self) -> dict:
        """The JSON answer of the API."""
        return {"id": self.id, "result_id": self.result_id, "reading": self.reading.value,
                "reason": self.reason, "radiologist": self.radiologist,
                "received_at": self.received_at, "model": self.model,
                "operating_point": self.operating_point, "probability": self.probability,
                "flag": self.flag, "agrees_with_model": self.agrees}


def _row(row: sqlite3.Row) -> Feedback:
    return Feedback(row["id"], row["result_id"], row["study_instance_uid"],
                    row["sop_instance_uid"], Reading(row["reading"]), row["reason"],
                    row["radiologist"], row["received_at"], json.loads(row["model"]),
                    json.loads(row["operating_point"]) if row["operating_point"] else None,
                    row["probability"], row["flag"])


class FeedbackStore:
    def __init__(self, home: Path) -> None:
        self._db = Database(home / FEEDBACK_DB, SCHEMA)

    def add(self, result: dict, reading: Reading, reason: str | None,
            radiologist: str) -> tuple[Feedback, int | None]:
        """Record a reading of the stored triage `result` (its summary JSON); returns it and the
        id of the reading it supersedes (None for the first)."""
        model = result.get("model")
        operating_point = result.get("operating_point")
        received_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._db.transaction() as db:
            (previous,) = db.execute("SELECT MAX(id) FROM feedback WHERE result_id = ?",
                                     (result["id"],)).fetchone()
            cursor = db.execute(
                "INSERT INTO feedback (result_id, study_instance_uid, sop_instance_uid, reading, "
                "reason, radiologist, received_at, model, operating_point, probability, flag) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (result["id"], result.get("study_instance_uid", ""),
                 result.get("sop_instance_uid", ""), reading.value, reason, radiologist,
                 received_at, json.dumps(model if isinstance(model, dict) else {}),
                 json.dumps(operating_point) if isinstance(operating_point, dict) else None,
                 result.get("probability"), result.get("flag")))
            row = db.execute("SELECT * FROM feedback WHERE id = ?",
                             (cursor.lastrowid,)).fetchone()
        return _row(row), previous

    def history(self, result_id: str) -> list[Feedback]:
        """Every reading of one result, oldest first (the last one counts)."""
        return [_row(row) for row in self._db.query(
            "SELECT * FROM feedback WHERE result_id = ? ORDER BY id", (result_id,))]

    def current(self, since: str | None = None) -> list[Feedback]:
        """The newest reading of each result whose newest reading came at or after `since`
        (an ISO date or time, UTC), oldest first."""
        rows = self._db.query(
            "SELECT * FROM feedback WHERE id IN (SELECT MAX(id) FROM feedback GROUP BY result_id) "
            "AND received_at >= ? ORDER BY id", (since or "",))
        return [_row(row) for row in rows]

    def studies_with_feedback(self) -> dict[str, Reading]:
        """Study Instance UID -> the newest reading of any of its results."""
        rows = self._db.query(
            "SELECT study_instance_uid, reading FROM feedback WHERE id IN "
            "(SELECT MAX(id) FROM feedback GROUP BY study_instance_uid)")
        return {row["study_instance_uid"]: Reading(row["reading"]) for row in rows}
