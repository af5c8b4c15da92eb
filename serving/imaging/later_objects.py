"""Result objects built after the answer.

A triage over HTTP answers once the model has scored the image: its summary, the source
instance and the result are fsync'd (`ResultStore.accept`), then the SR and Secondary Capture
are built in a process of its own (`object_builder`) and stored (`ResultStore.complete`). A GET
of an object not yet written waits for it. Nothing accepted is lost: a process that dies first
leaves the result pending with its source, and the next one to look (the service's start, or
a GET from any replica) builds the objects from it, the same SR and picture for the same result.

At most `slots` results per process wait for their objects; past that, a request builds its
own before answering, so a burst cannot pile up work behind the answers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from clinassist.serving.imaging.object_builder import ObjectBuilder
from clinassist.serving.imaging.results_store import Claim, ResultStore

log = logging.getLogger(__name__)
SLOTS = 2
WAIT_S = 30.0  # how long a GET waits for objects being built before answering 503
POLL_S = 0.02


class LaterObjects:
    def __init__(self, store: ResultStore, slots: int = SLOTS) -> None:
        self.store, self.slots = store, slots
        self._lock = threading.Lock()
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()
        self._builder = ObjectBuilder()  # its process started for the first result deferred

    def reserve(self) -> bool:
        """Take a slot for one result to build later; False when all are taken."""
        with self._lock:
            if self._in_flight >= self.slots:
                return False
            self._in_flight += 1
            return True

    def unreserve(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def build(self, claim: Claim) -> None:
        """Build and store the objects of an accepted result in the background (its slot
        reserved)."""
        task = asyncio.get_running_loop().create_task(self._build(claim))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _build(self, claim: Claim) -> None:
        try:
            await self._complete(claim)
        except Exception:  # the result stays pending with its source: built at the next look
            log.exception("building the objects of a result failed; it stays pending")
        finally:
            claim.release()
            self.unreserve()

    async def _complete(self, claim: Claim) -> None:
        source, record = self.store.source_path(claim.result_id), claim.result.as_record()
        objects = await asyncio.to_thread(self._builder.build, source, record)
        await asyncio.to_thread(self.store.complete, claim, objects)

    async def wait(self, result_id: str, wait_s: float = WAIT_S) -> bool:
        """Wait until a pending result is complete, building it here if its process died.
        Whether it is complete."""
        deadline = time.monotonic() + wait_s
        while self.store.is_pending(result_id):
            if time.monotonic() > deadline:
                return False
            claim = await asyncio.to_thread(self.store.claim, result_id)
            if claim is None:
                await asyncio.sleep(POLL_S)
            elif not await self._complete_orphan(claim):
                return False
        return True

    async def recover(self) -> int:
        """Build the objects of every pending result no live process is building, and remove
        the staging folders of results that died before they were accepted; how many built."""
        await asyncio.to_thread(self.store.sweep_staging)
        built = 0
        for result_id in self.store.pending():
            claim = self.store.claim(result_id)
            if claim is not None:
                built += await self._complete_orphan(claim)
        return built

    async def _complete_orphan(self, claim: Claim) -> bool:
        """Build and store the objects of a result its process left pending; whether done."""
        try:
            await self._complete(claim)
        except Exception:
            log.exception("building the objects of a result left pending failed")
            return False
        finally:
            claim.release()
        log.info("built the objects of a result left pending")
        return True
