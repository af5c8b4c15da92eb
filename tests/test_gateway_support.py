"""Helpers shared by the gateway tests (no tests here): a destination SCP that records what it
stores, a C-STORE/C-ECHO sender, synthetic chest radiographs, a bounded wait, and a real
`gateway serve` process (with the `processes` fixture that stops those a test started)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from dicom_fixtures import synthetic_cr
from service_process import free_port

PACS = "PACS"
GATEWAY = "CLINASSIST"
SUCCESS = 0x0000


@cache
def shared_models():
    """The committed bundles, loaded once per test process."""
    from clinassist.serving.imaging.triage import Models

    return Models.load(threads=1)


def write_config(home: Path, **settings) -> Path:
    """A gateway.json in `home` on a free loopback port, accepting PACS; `settings` override."""
    home.mkdir(parents=True, exist_ok=True)
    values = {"allowed_calling_ae_titles": [PACS], "ae_title": GATEWAY, "host": "127.0.0.1",
              "port": free_port(), "backoff_s": 0.2, "max_backoff_s": 1.0, **settings}
    path = home / "gateway.json"
    path.write_text(json.dumps(values))
    return path


def radiograph(index: int = 0) -> Dataset:
    """A small synthetic CR chest PA of its own patient and study."""
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 4096, (128, 128), dtype=np.uint16)
    return synthetic_cr(pixels, PatientID=f"PID-{index:04d}-SECRET",
                        PatientName=f"Doe^Jane{index}", AccessionNumber=f"ACC{index:04d}")


class Destination:
    """A C-STORE SCP standing in for the PACS that receives results; start/stop at will."""

    def __init__(self, ae_title: str = PACS, port: int | None = None) -> None:
        self.ae_title, self.port = ae_title, port or free_port()
        self.stored: list[Dataset] = []
        self._lock = threading.Lock()
        self._server = None

    def __str__(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def start(self) -> "Destination":
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._store)])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _store(self, event: evt.Event) -> int:
        with self._lock:
            self.stored.append(event.dataset)
        return 0x0000

    def results_by_study(self) -> dict[str, dict[str, set[str]]]:
        """For each study: the distinct SOP Instance UIDs stored per Modality (SR, OT...)."""
        studies: dict[str, dict[str, set[str]]] = {}
        with self._lock:
            for ds in self.stored:
                kinds = studies.setdefault(str(ds.StudyInstanceUID), {})
                kinds.setdefault(str(ds.SOPClassUID), set()).add(str(ds.SOPInstanceUID))
        return studies


def send(port: int, instances: list[Dataset], calling: str = PACS, called: str = GATEWAY,
         after_each: Callable[[int, int | None], None] | None = None,
         answer_timeout: float = 30) -> list[int | None]:
    """C-STORE `instances` over one association; each one's status (None: no answer within
    `answer_timeout` seconds)."""
    ae = AE(ae_title=calling)
    ae.dimse_timeout = answer_timeout
    for ds in instances[:1]:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", port, ae_title=called)
    if not association.is_established:
        return [None] * len(instances)
    statuses: list[int | None] = []
    try:
        for ds in instances:
            status = association.send_c_store(ds) if association.is_established else None
            statuses.append(status.get("Status") if status else None)
            if after_each is not None:
                after_each(len(statuses) - 1, statuses[-1])
    finally:
        association.release()
    return statuses


def echo(port: int, calling: str = PACS, called: str = GATEWAY) -> int | None:
    """The C-ECHO status, or None when the association was refused."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", port, ae_title=called)
    if not association.is_established:
        return None
    try:
        status = association.send_c_echo()
        return status.get("Status") if status else None
    finally:
        association.release()


def wait_for(condition: Callable[[], object], timeout: float, what: str):
    """Poll `condition` until truthy (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Webhook:
    """An HTTP server on loopback answering every POST with `status`, keeping each request's
    headers and body (a webhook, or a STOW-RS origin at `url` + "/studies")."""

    def __init__(self, status: int = 204) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        requests = self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                requests.append((self.path, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def received(self) -> list[dict]:
        """The JSON bodies POSTed."""
        return [json.loads(body) for _, _, body in self.requests]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class GatewayProcess:
    """`python -m clinassist.serving.gateway serve` in its own process group, logging to a file."""

    def __init__(self, home: Path, port: int, calling: str = PACS,
                 env: dict[str, str] | None = None) -> None:
        self.home, self.port, self.calling, self.env = home, port, calling, env or {}
        self.process: subprocess.Popen | None = None

    def start(self) -> "GatewayProcess":
        with open(self.home / "gateway.log", "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "clinassist.serving.gateway", "serve"], cwd=self.home,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "CLINASSIST_HOME": str(self.home), **self.env})
        wait_for(lambda: self.process.poll() is not None
                 or echo(self.port, calling=self.calling) == SUCCESS, 120,
                 "the gateway to answer C-ECHO")
        assert self.process.poll() is None, (self.home / "gateway.log").read_text()[-2000:]
        return self

    def kill(self, signum: int) -> int:
        os.killpg(self.process.pid, signum)
        return self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.kill(signal.SIGTERM)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)


@pytest.fixture
def processes():
    """Gateway processes a test starts (append them); stopped after it."""
    started: list[GatewayProcess] = []
    yield started
    for process in started:
        process.stop()
