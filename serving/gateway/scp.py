"""The gateway's DICOM listener: C-ECHO and C-STORE (PS3.4 A.4, B.2) from allowed AE titles.

An instance is acknowledged only after the intake has fsync'd its file and committed its job
row, so whatever the sender saw stored survives a crash.
"""

from __future__ import annotations

import logging

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (ComputedRadiographyImageStorage,
                                  DigitalXRayImageStorageForPresentation,
                                  DigitalXRayImageStorageForProcessing, Verification)
from pynetdicom.transport import ThreadedAssociationServer

from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.intake import Intake
from clinassist.serving.security import AuditTrail

log = logging.getLogger(__name__)
RADIOGRAPH_STORAGE = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                      DigitalXRayImageStorageForProcessing)
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700  # PS3.4 Table B.2-1


class StorageSCP:
    """Accepts associations only from `config.allowed_calling_ae_titles`, addressed to
    `config.ae_title`, and hands each instance to the intake."""

    def __init__(self, config: GatewayConfig, intake: Intake, audit: AuditTrail) -> None:
        self.config, self.intake, self.audit = config, intake, audit
        self.actor = f"gateway:{config.ae_title}"
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        ae = AE(ae_title=self.config.ae_title)
        ae.require_called_aet = True
        ae.require_calling_aet = list(self.config.allowed_calling_ae_titles)
        ae.add_supported_context(Verification)
        for sop_class in RADIOGRAPH_STORAGE:
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(
            (self.config.host, self.config.port), block=False,
            evt_handlers=[(evt.EVT_C_ECHO, lambda event: SUCCESS),
                          (evt.EVT_C_STORE, self._store), (evt.EVT_REJECTED, self._rejected)])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _store(self, event: evt.Event) -> int:
        calling = event.assoc.requestor.ae_title
        try:
            self.intake.admit(event.encoded_dataset(), str(event.request.AffectedSOPInstanceUID),
                              calling, _patient_ids(event))
        except Exception as error:  # disk full, database locked: the sender must retry
            log.error("could not queue an instance from %s (%s)", calling, type(error).__name__)
            return OUT_OF_RESOURCES
        return SUCCESS

    def _rejected(self, event: evt.Event) -> None:
        request = event.assoc.requestor.primitive
        refused = (f"refused an association from AE title {request.calling_ae_title!r} to "
                   f"{request.called_ae_title!r}; we accept {self.config.ae_title!r} from "
                   f"{', '.join(self.config.allowed_calling_ae_titles)}")
        log.warning("%s (%s)", refused, event.assoc.requestor.address)
        self.audit.record(actor=self.actor, role="gateway", action="gateway:associate",
                          resource="association", outcome="failure", detail=refused)


def _patient_ids(event: evt.Event) -> list[str]:
    """The instance's PatientID, if its header can be read (triage reports it otherwise)."""
    try:
        patient_id = str(event.dataset.get("PatientID", ""))
    except Exception:
        return []
    return [patient_id] if patient_id else []
