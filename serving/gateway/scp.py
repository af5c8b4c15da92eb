"""The gateway's DICOM listener: C-ECHO and C-STORE (PS3.4 A.4, B.2) from allowed AE titles.

An instance is acknowledged only after the intake has fsync'd its file and committed its job
row, so whatever the sender saw stored survives a crash. Stopping lets the C-STOREs being
handled finish (and their jobs commit), refuses later ones with "out of resources" (send
again) and then aborts the associations still open: no instance is acknowledged and lost.
"""

from __future__ import annotations

import logging
import threading
import time

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (ComputedRadiographyImageStorage,
                                  DigitalXRayImageStorageForPresentation,
                                  DigitalXRayImageStorageForProcessing, Verification)
from pynetdicom.transport import ThreadedAssociationServer

from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.inspection import Refused, StoreStatus
from clinassist.serving.gateway.intake import Intake
from clinassist.serving.gateway.pdu_reads import read_whole_pdus
from clinassist.serving.gateway.tls import server_context
from clinassist.serving.security import AuditTrail

log = logging.getLogger(__name__)
# The largest P-DATA PDU a sender may send us. pynetdicom's default (16,382 bytes) splits a
# 7.2 MB radiograph into 440 PDUs, each decoded by Python's state machine; 1 MiB makes it 7.
MAX_PDU_BYTES = 1 << 20
RADIOGRAPH_STORAGE = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                      DigitalXRayImageStorageForProcessing)


class StorageSCP:
    """Accepts associations only from `config.allowed_calling_ae_titles`, addressed to
    `config.ae_title` (over TLS only, with `config.tls`), and hands each instance to the
    intake."""

    def __init__(self, config: GatewayConfig, intake: Intake, audit: AuditTrail) -> None:
        self.config, self.intake, self.audit = config, intake, audit
        self.actor = f"gateway:{config.ae_title}"
        self._server: ThreadedAssociationServer | None = None
        self._stopping = False
        self._in_flight = 0  # C-STOREs being handled
        self._idle = threading.Condition()

    def start(self) -> None:
        read_whole_pdus()
        ae = AE(ae_title=self.config.ae_title)
        ae.require_called_aet = True
        ae.maximum_pdu_size = MAX_PDU_BYTES
        ae.require_calling_aet = list(self.config.allowed_calling_ae_titles)
        ae.add_supported_context(Verification)
        for sop_class in RADIOGRAPH_STORAGE:
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(
            (self.config.host, self.config.port), block=False,
            ssl_context=server_context(self.config.tls) if self.config.tls else None,
            evt_handlers=[(evt.EVT_C_ECHO, lambda event: StoreStatus.SUCCESS),
                          (evt.EVT_C_STORE, self._store), (evt.EVT_REJECTED, self._rejected)])

    def stop(self, deadline: float) -> bool:
        """Close the port, let the C-STOREs being handled finish until `deadline` (monotonic
        time), then abort the open associations. False if a C-STORE was still being handled
        (it is not acknowledged: the sender sends it again)."""
        if self._server is None:
            return True
        with self._idle:
            self._stopping = True
        self._server.shutdown()
        with self._idle:
            finished = self._idle.wait_for(lambda: self._in_flight == 0,
                                           max(0.0, deadline - time.monotonic()))
        for association in self._server.active_associations:
            association.abort()
        return finished

    def _store(self, event: evt.Event) -> int | Dataset:
        """Success once the instance is durable; else a failure status with its error comment.
        Whatever the bytes, the sender gets an answer and the association stays up."""
        with self._idle:
            if self._stopping:
                return _status(StoreStatus.OUT_OF_RESOURCES,
                               "the gateway is stopping; send it again later")
            self._in_flight += 1
        try:
            return self._admit(event)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _admit(self, event: evt.Event) -> int | Dataset:
        calling = event.assoc.requestor.ae_title
        try:
            self.intake.admit(event.encoded_dataset(), str(event.request.AffectedSOPClassUID),
                              str(event.request.AffectedSOPInstanceUID), calling)
        except Refused as refused:
            return _status(refused.status, refused.comment)
        except Exception:  # a fault of ours, not the sender's: logged, answered, never a crash
            log.exception("a C-STORE from %s could not be inspected", calling)
            return _status(StoreStatus.CANNOT_UNDERSTAND, "the gateway could not inspect it; "
                           "see its log")
        return StoreStatus.SUCCESS

    def _rejected(self, event: evt.Event) -> None:
        request = event.assoc.requestor.primitive
        refused = (f"refused an association from AE title {request.calling_ae_title!r} to "
                   f"{request.called_ae_title!r}; we accept {self.config.ae_title!r} from "
                   f"{', '.join(self.config.allowed_calling_ae_titles)}")
        log.warning("%s (%s)", refused, event.assoc.requestor.address)
        self.audit.record(actor=self.actor, role="gateway", action="gateway:associate",
                          resource="association", outcome="failure", detail=refused)


def _status(status: StoreStatus, comment: str) -> Dataset:
    """A C-STORE response status with its Error Comment (0000,0902)."""
    answer = Dataset()
    answer.Status = int(status)
    answer.ErrorComment = comment
    return answer
