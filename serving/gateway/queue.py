"""The durable job queue: received instances on disk, their jobs and deliveries in the
gateway-queue store (`gateway/queue.db`, or the schema `gateway_queue` of PostgreSQL).

A job is `received` (to triage), `processed` (results stored, deliveries pending), `done`,
`rejected` (not a usable instance) or `dead` (out of attempts; `retry` revives it). Each of
its deliveries, one per destination, is `pending`, `delivered` or `dead`.

Several gateways may share one queue (PostgreSQL, and one spool folder for the received
instances). A worker claims a row with a lease: its gateway's owner id and an expiry
`lease_s` ahead, renewed by `keep_leases` while the gateway runs. A row whose lease has expired
(its gateway died) is claimed by the next gateway that looks; a claim is taken in PostgreSQL
with `FOR UPDATE SKIP LOCKED`, so two gateways never take the same row. A step is recorded only
while its gateway still holds the lease (`LeaseLost` otherwise), so a gateway that stalled past
its lease cannot overwrite the work of the one that took over. The owner id is kept in the
gateway's home, so a restarted gateway takes its own claims back at once (`recover`).
A received file is deleted once its job is triaged or rejected.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Double,
    Integer,
    MetaData,
    Row,
    Table,
    Text,
    case,
    func,
    select,
    update,
)

from clinassist.errors import ClinassistError
from clinassist.serving.durable import write_synced
from clinassist.serving.security.database import private_dir
from clinassist.serving.storage import Store, StoreSchema
from clinassist.serving.storage.sql import insert

log = logging.getLogger(__name__)
QUEUE_DIR, QUEUE_DB = "gateway", "queue.db"
QUEUE = StoreSchema("gateway_queue", f"{QUEUE_DIR}/{QUEUE_DB}")
OWNER_FILE = "lease-owner"  # this home's gateway, as named in the leases it holds
JOB_STATES = ("received", "processed", "done", "rejected", "dead")
LEASE_S = 60.0
ORPHAN_AGE_S = 3600.0  # a file no job names, this old, was never acknowledged
TABLES = MetaData()
job = Table("job", TABLES, Column("id", Text, primary_key=True),
            Column("sop_instance_uid", Text), Column("calling_ae_title", Text),
            Column("received_at", Double), Column("state", Text), Column("attempts", Integer),
            Column("next_attempt_at", Double), Column("last_error", Text),
            Column("result_id", Text), Column("lease_owner", Text),
            Column("lease_expires", Double))
delivery = Table("delivery", TABLES, Column("job_id", Text, primary_key=True),
                 Column("destination", Text, primary_key=True), Column("state", Text),
                 Column("attempts", Integer), Column("next_attempt_at", Double),
                 Column("last_error", Text), Column("lease_owner", Text),
                 Column("lease_expires", Double))
RELEASED = {"lease_owner": None, "lease_expires": 0.0}


class LeaseLost(ClinassistError):
    """Another gateway took over a row this one had claimed (its lease had expired)."""


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
    def __init__(self, home: Path, backoff: Backoff, lease_s: float = LEASE_S,
                 spool: Path | None = None, owner: str | None = None) -> None:
        """`spool`: the folder of received instances (default `home/gateway/instances`); the
        gateways that share a queue share it. `owner`: the name this gateway's leases carry
        (default: this home's, kept in `home/gateway/lease-owner`)."""
        self.folder = private_dir(home / QUEUE_DIR)
        self.instances = private_dir(spool or self.folder / "instances")
        self.backoff, self.lease_s = backoff, lease_s
        self.owner = owner or _owner_id(self.folder / OWNER_FILE)
        self._db = Store(home, QUEUE)

    def recover(self) -> None:
        """Before a gateway starts: take back the claims this home's gateway held when it
        stopped (or was killed), and delete received files that no job needs (triaged, or
        never acknowledged and older than ORPHAN_AGE_S: a younger one may be another gateway's
        C-STORE being committed)."""
        with self._db.write() as db:
            for table in (job, delivery):
                db.execute(update(table).where(table.c.lease_owner == self.owner)
                           .values(RELEASED))
            needed = {f"{job_id}.dcm" for job_id in db.scalars(select(job.c.id).where(
                (job.c.state == "received")
                | ((job.c.state == "dead") & job.c.result_id.is_(None))))}
        old = time.time() - ORPHAN_AGE_S
        for path in self.instances.iterdir():
            if path.name not in needed and _modified(path) < old:
                path.unlink(missing_ok=True)

    def receive(self, data: bytes, sop_instance_uid: str,
                calling_ae_title: str) -> tuple[str, bool]:
        """Store an instance durably; returns its job id and whether it is new (False: sent
        before, and the earlier job stands)."""
        job_id = uuid.uuid4().hex
        path = self.instance_path(job_id)
        write_synced(path, data)
        with self._db.write() as db:
            added = db.execute(insert(db, job).values(
                id=job_id, sop_instance_uid=sop_instance_uid, calling_ae_title=calling_ae_title,
                received_at=time.time(), state="received", attempts=0, next_attempt_at=0.0,
                **RELEASED).on_conflict_do_nothing().returning(job.c.id)).first()
            existing = None if added else db.scalar(
                select(job.c.id).where(job.c.sop_instance_uid == sop_instance_uid))
        if existing is not None:
            path.unlink()
            return existing, False
        return job_id, True

    def knows(self, sop_instance_uid: str) -> bool:
        """Whether an instance with this SOP Instance UID was received already."""
        with self._db.read() as db:
            return db.scalar(select(job.c.id).where(
                job.c.sop_instance_uid == sop_instance_uid)) is not None

    def backlog(self) -> int:
        """How many received instances wait for triage."""
        with self._db.read() as db:
            return db.scalar(select(func.count()).where(job.c.state == "received")) or 0

    def instance_path(self, job_id: str) -> Path:
        return self.instances / f"{job_id}.dcm"

    def claim_job(self) -> Job | None:
        """The oldest due `received` job, now leased to this gateway."""
        with self._db.write() as db:
            row = self._claim(db, job, "received", job.c.received_at)
        return None if row is None else _job(row)

    def claim_delivery(self) -> Delivery | None:
        """The oldest due `pending` delivery, now leased to this gateway."""
        with self._db.write() as db:
            row = self._claim(db, delivery, "pending", delivery.c.next_attempt_at)
            if row is None:
                return None
            result_id = db.scalar(select(job.c.result_id).where(job.c.id == row.job_id))
        if result_id is None:  # a job's deliveries are queued with its result
            raise LookupError(f"job {row.job_id} has a delivery but no result")
        return Delivery(row.job_id, row.destination, row.attempts, result_id)

    def keep_leases(self, stop: threading.Event) -> None:
        """Renew this gateway's leases every third of `lease_s` until `stop` is set (run it
        in a thread of its own)."""
        while not stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except Exception:  # the database unreachable for a while: try again
                log.exception("could not renew the gateway's leases; retrying")

    def renew(self) -> None:
        """Extend every lease this gateway holds by `lease_s` from now."""
        with self._db.write() as db:
            for table in (job, delivery):
                db.execute(update(table).where(table.c.lease_owner == self.owner)
                           .values(lease_expires=time.time() + self.lease_s))

    def processed(self, job_id: str, result_id: str, destinations: list[str]) -> None:
        """Results stored: queue one delivery per destination (done at once if there are none)."""
        with self._db.write() as db:
            self._finish(db, job, job.c.id == job_id, state="processed" if destinations
                         else "done", result_id=result_id, last_error=None)
            if destinations:
                db.execute(insert(db, delivery).values([
                    {"job_id": job_id, "destination": destination, "state": "pending",
                     "attempts": 0, "next_attempt_at": 0.0, **RELEASED}
                    for destination in destinations]).on_conflict_do_nothing())
        self.instance_path(job_id).unlink(missing_ok=True)  # the results stand for it now

    def rejected(self, job_id: str, reason: str) -> None:
        with self._db.write() as db:
            self._finish(db, job, job.c.id == job_id, state="rejected", last_error=reason)
        self.instance_path(job_id).unlink(missing_ok=True)

    def job_failed(self, job_id: str, error: str) -> bool:
        """Count a failed triage; returns True when the job is now dead."""
        with self._db.write() as db:
            return self._failed(db, job, job.c.id == job_id, "received", error)

    def delivered(self, job_id: str, destination: str) -> bool:
        """Mark one delivery done; returns True when it was the job's last one."""
        with self._db.write() as db:
            _lock_job(db, job_id)  # the job's deliveries finish one at a time, whoever sends
            self._finish(db, delivery, _delivery_key(job_id, destination), state="delivered",
                         last_error=None)
            left = db.scalar(select(func.count()).where(delivery.c.job_id == job_id,
                                                        delivery.c.state != "delivered"))
            if left == 0:
                db.execute(update(job).where(job.c.id == job_id).values(state="done"))
        return left == 0

    def delivery_failed(self, job_id: str, destination: str, error: str) -> bool:
        """Count a failed delivery; returns True when it (and so its job) is now dead."""
        with self._db.write() as db:
            _lock_job(db, job_id)
            dead = self._failed(db, delivery, _delivery_key(job_id, destination), "pending",
                                error)
            if dead:
                attempts = select(func.max(delivery.c.attempts)).where(
                    delivery.c.job_id == job_id).scalar_subquery()
                db.execute(update(job).where(job.c.id == job_id).values(
                    state="dead", last_error=error, attempts=attempts))
        return dead

    def retry(self, job_id: str | None = None) -> int:
        """Revive dead jobs (one, or all): attempts start again now. Returns how many."""
        with self._db.write() as db:
            query = select(job.c.id).where(job.c.state == "dead").with_for_update()
            jobs = list(db.scalars(query if job_id is None else query.where(job.c.id == job_id)))
            for dead in jobs:
                db.execute(update(delivery).where(delivery.c.job_id == dead,
                                                  delivery.c.state == "dead")
                           .values(state="pending", attempts=0, next_attempt_at=0.0))
                db.execute(update(job).where(job.c.id == dead).values(
                    state=case((job.c.result_id.is_(None), "received"), else_="processed"),
                    attempts=0, next_attempt_at=0.0))
        return len(jobs)

    def counts(self) -> dict[str, int]:
        """Jobs per state."""
        with self._db.read() as db:
            return {state: n for state, n in db.execute(
                select(job.c.state, func.count()).group_by(job.c.state))}

    def jobs(self, state: str | None = None) -> list[Job]:
        query = select(job).order_by(job.c.received_at)
        with self._db.read() as db:
            return [_job(row) for row in db.execute(
                query if state is None else query.where(job.c.state == state))]

    def expired_claims(self) -> int:
        """Rows claimed by a gateway whose lease has run out (it died, or stalls)."""
        return self._claims(expired=True)

    def held_claims(self) -> int:
        """Rows some gateway holds now, whether or not its lease has run out."""
        return self._claims(expired=False)

    def _claims(self, expired: bool) -> int:
        now, counted = time.time(), 0
        with self._db.read() as db:
            for table in (job, delivery):
                query = select(func.count()).where(table.c.lease_owner.is_not(None))
                if expired:
                    query = query.where(table.c.lease_expires <= now)
                counted += db.scalar(query) or 0
        return counted

    def _claim(self, db: Connection, table: Table, state: str, order: Column) -> Row | None:
        now = time.time()
        row = db.execute(select(table).where(
            table.c.state == state, table.c.lease_expires <= now,
            table.c.next_attempt_at <= now).order_by(order).limit(1)
            .with_for_update(skip_locked=True)).first()
        if row is not None:
            key = [column == getattr(row, column.name) for column in table.primary_key]
            db.execute(update(table).where(*key).values(
                lease_owner=self.owner, lease_expires=now + self.lease_s))
        return row

    def _finish(self, db: Connection, table: Table, key: Any, **values: object) -> None:
        """Record the outcome of a step on a row this gateway holds, and release it."""
        finished = db.execute(update(table).where(key, table.c.lease_owner == self.owner)
                              .values(**values, **RELEASED)
                              .returning(table.c.lease_owner)).first()
        if finished is None:
            raise LeaseLost(f"another gateway took over this {table.name} after this one's "
                            "lease ran out (was the gateway stalled?); this step is dropped")

    def _failed(self, db: Connection, table: Table, key: Any, state: str,
                error: str) -> bool:
        attempts = (db.scalar(select(table.c.attempts).where(key)) or 0) + 1
        dead = attempts >= self.backoff.max_attempts
        self._finish(db, table, key, attempts=attempts, last_error=error,
                     next_attempt_at=time.time() + self.backoff.delay(attempts),
                     state="dead" if dead else state)
        return dead


def _delivery_key(job_id: str, destination: str) -> Any:
    return (delivery.c.job_id == job_id) & (delivery.c.destination == destination)


def _lock_job(db: Connection, job_id: str) -> None:
    """Lock the job's row until the transaction ends (PostgreSQL; SQLite's write lock holds
    everything already)."""
    db.execute(select(job.c.id).where(job.c.id == job_id).with_for_update())


def _owner_id(path: Path) -> str:
    """This home's gateway id, made once and kept in `path`."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        owner = uuid.uuid4().hex
        write_synced(path, owner.encode())
        return owner


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # deleted since the folder was listed
        return float("inf")


def _job(row: Row) -> Job:
    return Job(row.id, row.sop_instance_uid, row.calling_ae_title, row.received_at, row.state,
               row.attempts, row.last_error, row.result_id)
