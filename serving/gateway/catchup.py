"""Catch up with Orthanc: every chest radiograph it stores is triaged, including those its
auto-routing could not push (the gateway was down or restarting, the push job failed).

Orthanc records each change in its log, `GET /changes?since=N&limit=M`: `NewInstance`,
`NewSeries`, ... each with an increasing `Seq`; `Last` is the newest Seq of the page and `Done`
says whether the log holds no more. The follower reads the log from the last Seq it kept, and
for each new instance that the Lua route would push (CR or DX, chest, not sent by the gateway
itself) and the queue does not know yet, fetches the file (`GET /instances/{id}/file`) and
hands it to the same intake as the SCP, idempotent on SOP Instance UID: push and catch-up
together queue an instance once. The position is committed (the gateway-changes store:
`gateway/changes.db`, or the schema `gateway_changes` of PostgreSQL, shared by the gateways
that follow the same Orthanc) only after every instance before it is durably queued, so a
gateway killed at any point reads again, at worst, changes whose instances it then finds
already queued; a gateway that saves a position behind another's makes them read a few changes
again, never skip one.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import BigInteger, Column, MetaData, Table, Text, select

from clinassist.errors import ClinassistError
from clinassist.serving.gateway.config import OrthancFeed
from clinassist.serving.gateway.inspection import Refused, StoreStatus
from clinassist.serving.gateway.intake import Intake
from clinassist.serving.gateway.queue import QUEUE_DIR, JobQueue
from clinassist.serving.storage import Store, StoreSchema
from clinassist.serving.storage.sql import insert

log = logging.getLogger(__name__)
CHANGES_DB = "changes.db"
CHANGES = StoreSchema("gateway_changes", f"{QUEUE_DIR}/{CHANGES_DB}")
feed_position = Table("feed_position", MetaData(), Column("feed", Text, primary_key=True),
                      Column("seq", BigInteger, nullable=False))
PAGE = 100  # changes read per request
TIMEOUT_S = 30
BACKLOG_WAIT_S = 0.5  # how soon a paused catch-up looks at the backlog again
SOURCE = "Orthanc's change log"
NEW_INSTANCE = "NewInstance"
RADIOGRAPHY = ("CR", "DX")  # as route-to-clinassist.lua
CHEST = ("", "CHEST")


class OrthancError(ClinassistError):
    """Orthanc answered, but not with what its REST API documents."""


@dataclass(frozen=True)
class Change:
    """One entry of Orthanc's change log."""

    seq: int
    change_type: str
    resource_id: str


@dataclass(frozen=True)
class ChangePage:
    changes: list[Change]
    last: int
    done: bool


@dataclass(frozen=True)
class StoredInstance:
    """What Orthanc's index says of an instance: enough to decide whether it is routed."""

    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    body_part_examined: str
    remote_ae_title: str | None  # the AE title that sent it to Orthanc, if it came over DICOM

    def routed(self, gateway_ae_title: str) -> bool:
        """The Lua route's filter: a CR or DX chest radiograph (body part CHEST or absent) that
        the gateway did not send (its SR and SC are never routed back to it)."""
        return (self.modality in RADIOGRAPHY and self.body_part_examined.upper() in CHEST
                and self.remote_ae_title != gateway_ae_title)


class OrthancRest:
    """The few calls of Orthanc's REST API that catch-up needs."""

    def __init__(self, feed: OrthancFeed) -> None:
        options = feed.auth.httpx_options() if feed.auth else {}
        self._client = httpx.Client(base_url=feed.url, timeout=TIMEOUT_S, **options)

    def close(self) -> None:
        self._client.close()

    def changes(self, since: int, limit: int = PAGE) -> ChangePage:
        page = self._json("/changes", {"since": since, "limit": limit})
        try:
            return ChangePage([Change(int(c["Seq"]), str(c["ChangeType"]), str(c["ID"]))
                               for c in page["Changes"]], int(page["Last"]), bool(page["Done"]))
        except (KeyError, TypeError, ValueError) as error:
            raise OrthancError(f"GET /changes answered without Changes, Last and Done "
                               f"({type(error).__name__}); is {self._client.base_url} Orthanc?"
                               ) from None

    def instance(self, resource_id: str) -> StoredInstance | None:
        """None when Orthanc no longer holds the instance (deleted since the change)."""
        tags = self._json(f"/instances/{resource_id}/simplified-tags", missing_ok=True)
        metadata = self._json(f"/instances/{resource_id}/metadata", {"expand": ""},
                              missing_ok=True)
        if tags is None or metadata is None:
            return None
        return StoredInstance(*(str(tags.get(keyword, "")) for keyword in (
            "SOPClassUID", "SOPInstanceUID", "Modality", "BodyPartExamined")),
            metadata.get("RemoteAET"))

    def file(self, resource_id: str) -> bytes | None:
        answer = self._client.get(f"/instances/{resource_id}/file")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.content

    def _json(self, path: str, params: dict[str, Any] | None = None,
              missing_ok: bool = False) -> Any:
        answer = self._client.get(path, params=params)
        if missing_ok and answer.status_code == 404:
            return None
        answer.raise_for_status()
        try:
            return answer.json()
        except ValueError:
            raise OrthancError(f"GET {path} did not answer JSON; is {self._client.base_url} "
                               "Orthanc's REST root?") from None


class FeedPosition:
    """The Seq up to which a change log is taken care of, one row per Orthanc URL (another
    Orthanc's log starts again from the beginning)."""

    def __init__(self, home: Path, feed_url: str) -> None:
        self.feed = feed_url
        self._db = Store(home, CHANGES)

    def load(self) -> int:
        with self._db.read() as db:
            seq = db.scalar(select(feed_position.c.seq).where(feed_position.c.feed == self.feed))
        return 0 if seq is None else int(seq)

    def save(self, seq: int) -> None:
        with self._db.write() as db:
            saved = insert(db, feed_position).values(feed=self.feed, seq=seq)
            db.execute(saved.on_conflict_do_update(index_elements=[feed_position.c.feed],
                                                   set_={"seq": saved.excluded.seq}))


class Progress(enum.Enum):
    MORE = "more"            # read on at once
    CAUGHT_UP = "caught up"  # wait poll_s
    BACKLOG = "backlog"      # wait until the workers have triaged some


class CatchUp:
    """Follows one Orthanc's change log in a thread of its own until `stop` is set."""

    def __init__(self, home: Path, feed: OrthancFeed, intake: Intake, queue: JobQueue,
                 gateway_ae_title: str) -> None:
        self.feed, self.intake, self.queue = feed, intake, queue
        self.gateway_ae_title = gateway_ae_title
        self.position = FeedPosition(home, feed.url)
        self._reachable = True

    def run(self, stop: threading.Event) -> None:
        orthanc = OrthancRest(self.feed)
        try:
            while not stop.is_set():
                progress = self._step_logged(orthanc, stop)
                if progress is Progress.CAUGHT_UP:
                    stop.wait(self.feed.poll_s)
                elif progress is Progress.BACKLOG:
                    stop.wait(BACKLOG_WAIT_S)
        finally:
            orthanc.close()

    def _step_logged(self, orthanc: OrthancRest, stop: threading.Event) -> Progress:
        """`step`, logging when Orthanc stops or starts answering (not at every poll); any
        failure is retried from the kept position after `poll_s`."""
        try:
            progress = self.step(orthanc, stop)
        except (httpx.HTTPError, OrthancError) as error:
            if self._reachable:
                log.warning("catch-up cannot read Orthanc at %s (%s); retrying every %g s",
                            self.feed.url, type(error).__name__, self.feed.poll_s)
            self._reachable = False
            return Progress.CAUGHT_UP
        except Refused:  # the queue could not store an instance (logged by the intake)
            return Progress.CAUGHT_UP
        except Exception:  # a fault of ours: keep following the log rather than stop
            log.exception("catch-up step failed; retrying in %g s", self.feed.poll_s)
            return Progress.CAUGHT_UP
        if not self._reachable:
            log.info("catch-up reads Orthanc at %s again", self.feed.url)
        self._reachable = True
        return progress

    def step(self, orthanc: OrthancRest, stop: threading.Event) -> Progress:
        """Take care of one page of changes from the kept position."""
        since = self.position.load()
        page = orthanc.changes(since)
        if page.last < since:
            log.warning("Orthanc's change log ends at %d, before the gateway's position %d: its "
                        "database was replaced; reading the new one from the start",
                        page.last, since)
            self.position.save(0)
            return Progress.MORE
        done = since
        try:
            for change in page.changes:
                if stop.is_set():
                    return Progress.CAUGHT_UP
                if change.change_type == NEW_INSTANCE:
                    if self.queue.backlog() >= self.feed.max_backlog:
                        return Progress.BACKLOG
                    self._take(orthanc, change)
                done = change.seq
            done = max(done, page.last)
        finally:
            if done > since:
                self.position.save(done)
        return Progress.CAUGHT_UP if page.done else Progress.MORE

    def _take(self, orthanc: OrthancRest, change: Change) -> None:
        stored = orthanc.instance(change.resource_id)
        if (stored is None or not stored.routed(self.gateway_ae_title)
                or self.queue.knows(stored.sop_instance_uid)):
            return
        data = orthanc.file(change.resource_id)
        if data is None:
            return
        try:
            self.intake.admit(data, stored.sop_class_uid, stored.sop_instance_uid, SOURCE)
        except Refused as refused:  # logged and audited by the intake; the log moves on
            if refused.status is StoreStatus.OUT_OF_RESOURCES:
                raise  # try again from this change
