"""How an instance enters the gateway, whoever hands it over (the SCP, or catch-up from the
PACS's change log): inspected, queued durably and idempotently on its SOP Instance UID,
audited, and the workers woken; or refused, audited, with the reason for the sender."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from clinassist.serving.dicom import Limits
from clinassist.serving.gateway.inspection import Refused, StoreStatus, inspect
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
                 on_receive: Callable[[], None], limits: Limits | None = None) -> None:
        self.queue, self.audit, self.on_receive = queue, audit, on_receive
        self.limits = limits or Limits.from_env()
        self.actor = f"gateway:{ae_title}"

    def admit(self, data: bytes, sop_class_uid: str, sop_instance_uid: str,
              source: str) -> Admitted:
        """Take in a DICOM Part 10 file that `source` (an AE title, or a description such as
        "Orthanc's change log") sent as this SOP Class and Instance; returns once the file and
        its job are durable. Raises Refused: a fault of the instance (audited and logged, never
        with a value from it), or OUT_OF_RESOURCES when the queue cannot store it (retry)."""
        try:
            instance = inspect(data, sop_class_uid, sop_instance_uid, self.limits)
        except Refused as refused:
            self._refused(source, refused)
            raise
        try:
            job_id, new = self.queue.receive(data, instance.sop_instance_uid, source)
        except Exception as error:  # disk full, database locked: the sender must retry
            log.error("could not queue an instance from %s (%s)", source, type(error).__name__)
            raise Refused(StoreStatus.OUT_OF_RESOURCES,
                          "the gateway cannot store it now; send it again later") from None
        self.audit.record(actor=self.actor, role="gateway", action="gateway:receive",
                          resource=job_id, outcome="success",
                          patient_ids=[instance.patient_id] if instance.patient_id else [],
                          detail=f"from {source}" + ("" if new else ", already received"))
        if new:
            log.info("job %s received from %s", job_id, source)
            self.on_receive()
        return Admitted(job_id, new)

    def _refused(self, source: str, refused: Refused) -> None:
        log.warning("refused an instance from %s: 0x%04X %s", source, refused.status,
                    refused.comment)
        self.audit.record(actor=self.actor, role="gateway", action="gateway:receive",
                          resource="instance", outcome="failure",
                          detail=f"from {source}: 0x{refused.status:04X} {refused.comment}")
