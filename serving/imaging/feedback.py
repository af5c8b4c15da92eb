"""Radiologists' readings of triaged studies, kept to measure and retrain the model
(`CLINASSIST_HOME/imaging_feedback.db`, or the schema `imaging_feedback` of PostgreSQL).

Each row links a reading to the triage result it answers, with the model and the operating
point that result was decided with (copied whole, whatever keys they hold), the probability and
the flag. Rows are append-only (triggers refuse UPDATE and DELETE): a second answer on the same
result is a new row, and the newest answer is the one that counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path

from sqlalchemy import Column, Double, Integer, MetaData, Row, Table, Text, func, select

from clinassist.serving.storage import Store, StoreSchema

FEEDBACK_DB = "imaging_feedback.db"
FEEDBACK = StoreSchema("imaging_feedback", FEEDBACK_DB)
feedback = Table("feedback", MetaData(), Column("id", Integer, primary_key=True),
                 *(Column(name, Text) for name in (
                     "result_id", "study_instance_uid", "sop_instance_uid", "reading", "reason",
                     "radiologist", "received_at", "model", "operating_point")),
                 Column("probability", Double), Column("flag", Text))


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


def _row(row: Row) -> Feedback:
    return Feedback(row.id, row.result_id, row.study_instance_uid, row.sop_instance_uid,
                    Reading(row.reading), row.reason, row.radiologist, row.received_at,
                    json.loads(row.model),
                    json.loads(row.operating_point) if row.operating_point else None,
                    row.probability, row.flag)


class FeedbackStore:
    def __init__(self, home: Path) -> None:
        self._db = Store(home, FEEDBACK)

    def add(self, result: dict, reading: Reading, reason: str | None,
            radiologist: str) -> tuple[Feedback, int | None]:
        """Record a reading of the stored triage `result` (its summary JSON); returns it and the
        id of the reading it supersedes (None for the first)."""
        model = result.get("model")
        operating_point = result.get("operating_point")
        received_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._db.write(serialised=True) as db:  # the reading superseded is the last one
            previous = db.scalar(select(func.max(feedback.c.id)).where(
                feedback.c.result_id == result["id"]))
            row = db.execute(feedback.insert().values(
                result_id=result["id"], study_instance_uid=result.get("study_instance_uid", ""),
                sop_instance_uid=result.get("sop_instance_uid", ""), reading=reading.value,
                reason=reason, radiologist=radiologist, received_at=received_at,
                model=json.dumps(model if isinstance(model, dict) else {}),
                operating_point=json.dumps(operating_point)
                if isinstance(operating_point, dict) else None,
                probability=result.get("probability"), flag=result.get("flag"))
                .returning(*feedback.c)).one()
        return _row(row), previous

    def history(self, result_id: str) -> list[Feedback]:
        """Every reading of one result, oldest first (the last one counts)."""
        with self._db.read() as db:
            return [_row(row) for row in db.execute(select(feedback).where(
                feedback.c.result_id == result_id).order_by(feedback.c.id))]

    def current(self, since: str | None = None) -> list[Feedback]:
        """The newest reading of each result whose newest reading came at or after `since`
        (an ISO date or time, UTC), oldest first."""
        newest = select(func.max(feedback.c.id)).group_by(feedback.c.result_id)
        with self._db.read() as db:
            return [_row(row) for row in db.execute(select(feedback).where(
                feedback.c.id.in_(newest), feedback.c.received_at >= (since or ""))
                .order_by(feedback.c.id))]

    def studies_with_feedback(self) -> dict[str, Reading]:
        """Study Instance UID -> the newest reading of any of its results."""
        newest = select(func.max(feedback.c.id)).group_by(feedback.c.study_instance_uid)
        with self._db.read() as db:
            return {uid: Reading(reading) for uid, reading in db.execute(
                select(feedback.c.study_instance_uid, feedback.c.reading)
                .where(feedback.c.id.in_(newest)))}
