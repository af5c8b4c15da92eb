"""The running gateway: the SCP, catch-up from the PACS's change log when configured, and a
pool of worker threads over one durable queue."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from clinassist.serving.dicom.quiet import keep_identifiers_out_of_logs, read_standard_tables
from clinassist.serving.gateway.catchup import CatchUp
from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.intake import Intake
from clinassist.serving.gateway.queue import Backoff, JobQueue
from clinassist.serving.gateway.scp import StorageSCP
from clinassist.serving.gateway.tls import client_context
from clinassist.serving.gateway.worker import Worker
from clinassist.serving.gateway.worklist import Worklist, max_wait_from_env
from clinassist.serving.security import AuditTrail
from clinassist.serving.imaging.object_builder import ObjectBuilder
from clinassist.serving.imaging.triage import Inference, Models, Pipeline

log = logging.getLogger(__name__)
IDLE_POLL_S = 0.5  # how soon an idle worker notices a retry that fell due
STOP_S = 5.0  # how long stopping waits for work in progress (supervisors allow about 10 s)


def open_queue(home: Path, config: GatewayConfig) -> JobQueue:
    return JobQueue(home, Backoff(config.max_attempts, config.backoff_s, config.max_backoff_s),
                    config.lease_s, Path(config.spool) if config.spool else None)


class Gateway:
    """Triage runs in-process on ONNX Runtime: one process to deploy next to the PACS, no
    HTTP hop or credentials between the gateway and the models. The SR and SC are built in a
    child process (`ObjectBuilder`), so their Python does not hold the gateway's GIL."""

    def __init__(self, home: Path, config: GatewayConfig, models: Models | None = None) -> None:
        keep_identifiers_out_of_logs()  # as the API worker reads headers: no value checks
        self.config = config
        self._work, self._stop = threading.Event(), threading.Event()
        self.models = models or Models.load()
        self.queue = open_queue(home, config)
        pipeline = Pipeline(self.models.describe(home), self._infer)
        self.objects = ObjectBuilder()
        self.worker = Worker(home, config.ae_title, config.destinations, pipeline, self.objects,
                             self.queue, Worklist(home, max_wait_from_env()),
                             client_context(config.tls) if config.tls else None)
        for credentials in config.credentials():
            credentials.resolve()  # a missing environment variable stops the start, not a job
        audit = AuditTrail(home)
        intake = Intake(self.queue, audit, config.ae_title, self._work.set)
        self.scp = StorageSCP(config, intake, audit)
        self.catch_up = CatchUp(home, config.orthanc, intake, self.queue, config.ae_title) \
            if config.orthanc else None
        self._threads: list[threading.Thread] = []

    async def _infer(self, images: list[np.ndarray]) -> list[Inference]:
        return self.models.infer(images)

    def start(self) -> None:
        read_standard_tables()  # before the SCP listens: held up by it, a stop signal waits
        self.objects.start()  # its imports, seconds, overlap the rest of the start
        self.queue.recover()
        self._threads = [threading.Thread(target=self._run, name=f"gateway-worker-{n}",
                                          daemon=True) for n in range(self.config.workers)]
        self._threads.append(threading.Thread(target=self.queue.keep_leases, args=(self._stop,),
                                              name="gateway-leases", daemon=True))
        if self.catch_up is not None:
            self._threads.append(threading.Thread(target=self.catch_up.run, args=(self._stop,),
                                                  name="gateway-catch-up", daemon=True))
        for thread in self._threads:
            thread.start()
        self.scp.start()
        log.info("gateway %s listening on %s:%d, %d worker(s), destinations: %s; catch-up: %s",
                 self.config.ae_title, self.config.host, self.config.port, self.config.workers,
                 ", ".join(map(str, self.config.destinations)) or "none",
                 self.config.orthanc.url if self.config.orthanc else "off")

    def stop(self) -> None:
        """Stop listening, let the C-STOREs being handled and the workers' current steps
        finish, and return within STOP_S. A thread still busy then (a delivery to a
        destination that does not answer, a read from an Orthanc that hangs) is left to end
        with the process: its job is claimed again at the next start, and a delivery counts
        only once the destination has stored it, so nothing is lost or sent twice as new."""
        started = time.monotonic()
        deadline = started + STOP_S
        stored = self.scp.stop(deadline)
        self._stop.set()
        self._work.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.objects.stop()
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        log.info("gateway %s stopped in %.1f s%s%s", self.config.ae_title,
                 time.monotonic() - started,
                 "" if stored else "; a C-STORE still being handled was not acknowledged",
                 f"; left busy: {', '.join(busy)}" if busy else "")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.worker.step()
            except Exception:  # e.g. the database locked too long: the row stays claimed
                log.exception("gateway worker step failed; continuing")
                busy = False
            if not busy:
                self._work.wait(IDLE_POLL_S)
                self._work.clear()
