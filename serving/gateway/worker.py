"""One unit of gateway work at a time: triage a received instance, or deliver its results.

Order matters for "exactly once": results are stored, the worklist updated and the triage
audited before the job is marked processed, so a crash in between leaves unreferenced results
and the audit row of a triage that did run, and the instance is triaged (and audited) again;
a delivery is marked done after the destination stored it, so a crash in between sends the
same objects (same SOP Instance UIDs) again, which a PACS stores once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import traceback
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread

from clinassist.errors import ClinassistError
from clinassist.serving.dicom import DicomRejection, TriageResult
from clinassist.serving.dicom.results import Flag
from clinassist.serving.gateway.config import Destination, WebhookDestination, parse_destination
from clinassist.serving.gateway.fhir import triage_report
from clinassist.serving.gateway.queue import Delivery, Job, JobQueue, LeaseLost
from clinassist.serving.gateway.sender import post_json, send
from clinassist.serving.gateway.worklist import Worklist, raised
from clinassist.serving.imaging.object_builder import ObjectBuilder
from clinassist.serving.imaging.results_store import ResultStore, results_dir
from clinassist.serving.security import AuditTrail
from clinassist.serving.imaging.triage import Pipeline

log = logging.getLogger(__name__)
RESULT_KINDS = ("sr", "sc")


class Worker:
    """Triage and delivery steps over a shared queue; several may run in threads."""

    def __init__(self, home: Path, ae_title: str, destinations: tuple[Destination, ...],
                 pipeline: Pipeline, objects: ObjectBuilder, queue: JobQueue,
                 worklist: Worklist, tls: ssl.SSLContext | None = None) -> None:
        self.ae_title, self.destinations, self.tls = ae_title, destinations, tls
        # A delivery names its destination as written; the configured one carries its options.
        self._configured = {str(d): d for d in destinations}
        self.pipeline, self.queue, self.worklist = pipeline, queue, worklist
        self.objects = objects  # the SR and SC, built in a process of their own (GIL)
        self.results = ResultStore(results_dir(home))
        self.audit = AuditTrail(home)

    def step(self) -> bool:
        """Do one due piece of work; False when there was nothing to do. Deliveries go
        first: finished results reach the radiologist before new instances are started."""
        try:
            delivery = self.queue.claim_delivery()
            if delivery is not None:
                self.deliver(delivery)
                return True
            job = self.queue.claim_job()
            if job is not None:
                self.triage(job)
                return True
        except LeaseLost as lost:  # this gateway stalled past its lease: the other one's work
            log.warning("%s", lost)
            return True
        return False

    def _study_priority(self, source: Dataset, result: TriageResult) -> Flag | None:
        """The study's worklist priority as it stands with this result, for its SR."""
        study = self.worklist.entry(str(source.StudyInstanceUID))
        priority = raised(study.priority if study else None, result.flag)
        return "urgent" if priority == "urgent" else "routine" if priority == "routine" else None

    def triage(self, job: Job) -> None:
        instance = self.queue.instance_path(job.id)
        try:
            outcome = asyncio.run(self.pipeline.decide(instance.read_bytes(),
                                                       self._study_priority))
            objects = self.objects.build(instance, (outcome.report or outcome.result).as_record())
        except DicomRejection as rejection:
            self.queue.rejected(job.id, rejection.code)
            log.warning("job %s rejected: %s", job.id, rejection.code)
            self._record("process", job.id, "failure", detail=rejection.code)
            return
        except Exception as error:  # any other failure is retried, then dead-lettered
            self._failed(job.id, [], error, self.queue.job_failed(job.id, _describe(error)))
            return
        source, result = outcome.source, outcome.result
        patient_id = str(source.get("PatientID", ""))
        result_id = self.results.save(outcome.summary(), objects)
        self.worklist.record(str(source.StudyInstanceUID), patient_id,
                             str(source.get("AccessionNumber", "")), result.flag,
                             result.probability, job.received_at, result_id)
        self._record("process", job.id, "success", [patient_id])  # before the step can end
        self.queue.processed(job.id, result_id, [str(d) for d in self.destinations])
        log.info("job %s processed: qc %s, flag %s", job.id,
                 "passed" if result.qc_passed else "failed", result.flag or "none")

    def deliver(self, delivery: Delivery) -> None:
        patients: list[str] = []
        try:
            objects = [self._result(delivery.result_id, kind) for kind in RESULT_KINDS]
            patients = [str(dcmread(BytesIO(objects[0])).get("PatientID", ""))]
            destination = (self._configured.get(delivery.destination)
                           or parse_destination(delivery.destination))
            if isinstance(destination, WebhookDestination):
                post_json(destination, self._report(delivery.result_id, patients[0]))
            else:
                send(self.ae_title, destination, objects, self.tls)
        except Exception as error:  # the destination is down, refuses, or times out: retry
            dead = self.queue.delivery_failed(delivery.job_id, delivery.destination,
                                              _describe(error))
            self._record("deliver", delivery.job_id, "failure", patients, delivery.destination)
            self._failed(delivery.job_id, patients, error, dead)
            return
        self.queue.delivered(delivery.job_id, delivery.destination)
        log.info("job %s delivered to %s", delivery.job_id, delivery.destination)
        self._record("deliver", delivery.job_id, "success", patients, delivery.destination)

    def _result(self, result_id: str, kind: str) -> bytes:
        data = self.results.read(result_id, kind)
        if data is None:
            raise FileNotFoundError(f"result {result_id} has no {kind} in {self.results.folder};"
                                    " restore the folder, then `clinassist gateway retry`")
        return data

    def _report(self, result_id: str, patient_id: str) -> dict:
        """The FHIR DiagnosticReport of a result, with its study's current priority."""
        summary = json.loads(self._result(result_id, "json"))
        study = self.worklist.entry(summary["study_instance_uid"])
        return triage_report(summary, patient_id, study.priority if study else "unscored")

    def _failed(self, job_id: str, patients: list[str], error: Exception, dead: bool) -> None:
        log.warning("job %s failed (%s)%s", job_id, type(error).__name__,
                    ": dead-lettered, see `clinassist gateway status`" if dead else "; will retry")
        if dead:
            self._record("fail", job_id, "failure", patients, type(error).__name__)

    def _record(self, action: str, job_id: str, outcome: str, patients: Sequence[str] = (),
                detail: str | None = None) -> None:
        self.audit.record(actor=f"gateway:{self.ae_title}", role="gateway",
                          action=f"gateway:{action}", resource=job_id, outcome=outcome,
                          patient_ids=[p for p in patients if p], detail=detail)


def _describe(error: Exception) -> str:
    """What went wrong, kept in the queue for `gateway status` and the admin API: our own
    errors' messages name no patient; a library's may quote a value of the data set, so only
    its type and where it was raised are kept."""
    if isinstance(error, ClinassistError):
        return f"{type(error).__name__}: {error}"[:300]
    place = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" at {Path(place.filename).name}:{place.lineno}" if place else ""
    return f"{type(error).__name__}{where} (message withheld: it may quote patient data)"
