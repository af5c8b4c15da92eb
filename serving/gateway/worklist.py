"""Study priorities for the reading worklist, in the gateway-worklist store
(`home/gateway/worklist.db`, or the schema `gateway_worklist` of PostgreSQL, which every
gateway and API replica shares).

A study's priority only ever rises: a routine result after an urgent one leaves it urgent
(field guide 1: good triage products never lower a priority). Studies without a triage
score (every instance failed QC) are `unscored`. When read, a study that has waited longer
than `max_wait` is escalated to urgent, so priority ordering cannot starve routine studies.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Column, Double, Integer, MetaData, Row, Table, Text, case, func, select

from clinassist.serving.storage import Store, StoreSchema
from clinassist.serving.storage.sql import greatest, insert, least

WORKLIST_DB = "worklist.db"
WORKLIST = StoreSchema("gateway_worklist", f"gateway/{WORKLIST_DB}")
MAX_WAIT_ENV = "CLINASSIST_WORKLIST_MAX_WAIT_MINUTES"
DEFAULT_MAX_WAIT = timedelta(minutes=60)
RANK = {"unscored": 0, "routine": 1, "urgent": 2}
PRIORITY = {rank: name for name, rank in RANK.items()}
study = Table("study", MetaData(), Column("study_instance_uid", Text, primary_key=True),
              Column("patient_id", Text), Column("accession_number", Text),
              Column("rank", Integer), Column("probability", Double),
              Column("first_received", Double), Column("result_id", Text))


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
        self._db = Store(home, WORKLIST)

    def record(self, study_instance_uid: str, patient_id: str, accession_number: str,
               flag: str | None, probability: float | None, received_at: float,
               result_id: str) -> None:
        """Add one triaged instance to its study; the priority is raised, never lowered.
        Recording the same instance again changes nothing."""
        rank = RANK[flag or "unscored"]
        with self._db.write() as db:
            added = insert(db, study).values(
                study_instance_uid=study_instance_uid, patient_id=patient_id,
                accession_number=accession_number, rank=rank, probability=probability,
                first_received=received_at, result_id=result_id)
            new = added.excluded
            db.execute(added.on_conflict_do_update(index_elements=[study.c.study_instance_uid],
                                                   set_={
                "rank": greatest(study.c.rank, new.rank),
                "probability": greatest(func.coalesce(study.c.probability, new.probability),
                                        func.coalesce(new.probability, study.c.probability)),
                "first_received": least(study.c.first_received, new.first_received),
                "result_id": case((new.rank >= study.c.rank, new.result_id),
                                  else_=study.c.result_id)}))

    def entries(self, now: float | None = None) -> list[Entry]:
        """Urgent (and escalated) studies first, then the longest waiting."""
        now = time.time() if now is None else now
        with self._db.read() as db:
            entries = [self._entry(row, now) for row in db.execute(select(study))]
        return sorted(entries, key=lambda e: (e.priority != "urgent", -e.waiting_minutes))

    def entry(self, study_instance_uid: str, now: float | None = None) -> Entry | None:
        with self._db.read() as db:
            row = db.execute(select(study).where(
                study.c.study_instance_uid == study_instance_uid)).first()
        return None if row is None else self._entry(row, time.time() if now is None else now)

    def _entry(self, row: Row, now: float) -> Entry:
        waited = now - row.first_received
        escalated = row.rank < RANK["urgent"] and waited >= self.max_wait.total_seconds()
        return Entry(row.study_instance_uid, row.patient_id, row.accession_number,
                     "urgent" if escalated else PRIORITY[row.rank], escalated,
                     row.probability, round(waited / 60, 1), row.result_id)
