"""How an instance enters the gateway, whoever hands it over (the SCP, or catch-up from the
PACS's change log): queued durably and idempotently on its SOP Instance UID, audited, and the
workers woken."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clinassist.serving.gateway.queue import JobQueue
from clinassist.serving.security import AuditTrail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admitted:
    """The job that holds an instance, and whether this hand-over created it (False: the
    instance was received before, and the earlier job stands)."""

    job_id: str
    new: bool


class Intake:
    """The one door into the queue, shared by every source of instances."""

    def __init__(self, queue: JobQueue, audit: AuditTrail, ae_title: str,
                 on_receive: Callable[[], None]) -> None:
        self.queue, self.audit, self.on_receive = queue, audit, on_receive
        self.actor = f"gateway:{ae_title}"

    def admit(self, data: bytes, sop_instance_uid: str, source: str,
              patient_ids: Sequence[str]) -> Admitted:
        """Queue a DICOM Part 10 file from `source` (an AE title, or a description such as
        "Orthanc's change log"); returns only once the file and its job are durable."""
        job_id, new = self.queue.receive(data, sop_instance_uid, source)
        self.audit.record(actor=self.actor, role="gateway", action="gateway:receive",
                          resource=job_id, outcome="success",
                          patient_ids=[p for p in patient_ids if p],
                          detail=f"from {source}" + ("" if new else ", already received"))
        if new:
            log.info("job %s received from %s", job_id, source)
            self.on_receive()
        return Admitted(job_id, new)
