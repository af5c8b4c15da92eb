"""Soak (not a test): mixed load on loopback for N minutes, then nothing leaked or was lost.

    nice -n 10 .venv/bin/python benchmarks/soak.py [--minutes 10] [--warmup-minutes 2] [--json F]

In a scratch folder it starts Orthanc (Debian packages, the shipped configuration and Lua
route), `clinassist gateway serve` delivering results back to it (push, and catch-up from its
change log) and `clinassist serve`, sharing one CLINASSIST_HOME as `make run` does. One client
per route sends requests one after another, each paced to its interval: imaging triage of the
real CR from $CLINASSIST_DATA/dicom_cr over HTTP, medication reviews as JSON, as a FHIR Bundle
and as a CDS Hooks order-sign call, and C-STOREs of the same CR (new UIDs each time) into
Orthanc, which routes them to the gateway. Each minute it prints requests, errors and p50/p99
latency per route, and the resident memory of every service process (median of samples taken
every 5 s).

At the end it waits for the gateway to drain, then checks: 0 errors; every service process
still the one started; the resident memory of every clinassist process grew by at most 10 %
from the last warm-up minute to the last minute (Orthanc's is printed, not judged: its storage
cache is its own); the audit chain verifies and holds one row per protected request sent;
every instance sent has exactly one SR and one Secondary Capture in Orthanc. Exit status 1
when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import service_process  # noqa: E402
from process_stats import named_processes, rss_mib  # noqa: E402
from service_process import free_port  # noqa: E402
from test_gateway_support import GatewayProcess, echo, write_config  # noqa: E402

from clinassist.config import data_dir  # noqa: E402
from clinassist.serving.gateway.orthanc import local  # noqa: E402
from clinassist.serving.security import AuditTrail  # noqa: E402

MAX_GROWTH = 0.10
RSS_SAMPLE_S = 5  # resident memory is read this often; each minute reports the median
DRAIN_TIMEOUT_S = 600  # for the gateway to deliver what Orthanc routed to it
AUDIT_TIMEOUT_S = 60  # rows are written once a response has been sent
HTTP_TIMEOUT_S = 120
START_TIMEOUT_S = 600  # for the gateway and the service to answer (a shared machine is slow)
SIGN = "/v1/cds-services/clinassist-medication-order-sign"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TEN_DRUGS = ["warfarin", "Advil", "simvastatin", "clarithromycin", "metformin", "lisinopril",
             "amlodipine", "furosemide", "omeprazole", "acetaminophen"]
REVIEW = {"patient": {"age": 78, "sex": "female", "egfr": 38, "allergies": ["penicillin"],
                      "conditions": ["heart failure"]},
          "medications": [{"name": name} for name in TEN_DRUGS]}
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1948-02-01"}
EGFR = {"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 38, "unit": "mL/min/{1.73_m2}"}}


def medication(kind: str, rid: str, name: str, status: str = "active") -> dict:
    resource = {"resourceType": kind, "id": rid, "status": status,
                "subject": {"reference": "Patient/p1"},
                "medicationCodeableConcept": {"text": name}}
    if kind == "MedicationRequest":
        resource["intent"] = "order"
    return {"fullUrl": f"urn:uuid:{rid}", "resource": resource}


FHIR_BUNDLE = {"resourceType": "Bundle", "type": "collection", "entry": [
    {"resource": PATIENT}, {"resource": EGFR},
    medication("MedicationRequest", "m1", "warfarin"),
    medication("MedicationStatement", "m2", "Advil")]}
ORDER_SIGN = {
    "hook": "order-sign", "hookInstance": "d1cba5bc-5b7c-4c4e-9a62-5fb3b1e0c3a0",
    "context": {"userId": "Practitioner/1", "patientId": "p1", "draftOrders": {
        "resourceType": "Bundle", "type": "searchset",
        "entry": [medication("MedicationRequest", "d1", "clarithromycin", "draft")]}},
    "prefetch": {"patient": PATIENT, "egfr": {"resourceType": "Bundle", "type": "searchset",
                                              "entry": [{"resource": EGFR}]},
                 "medications": {"resourceType": "Bundle", "type": "searchset", "entry": [
                     medication("MedicationRequest", "c1", "simvastatin")]}}}


@dataclass(frozen=True)
class Route:
    name: str
    interval_s: float  # one request started at most this often
    protected: bool = True  # an HTTP route of the service: audited


ROUTES = (Route("imaging/triage", 2.0), Route("medication/json", 0.5),
          Route("medication/fhir", 1.0), Route("cds-hooks/order-sign", 1.0),
          Route("dicom/c-store", 5.0, protected=False))


@dataclass(frozen=True)
class RouteMinute:
    route: str
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class Minute:
    minute: int
    routes: list[RouteMinute]
    rss_mib: dict[str, float]

    @property
    def requests(self) -> int:
        return sum(route.requests for route in self.routes)

    @property
    def errors(self) -> int:
        return sum(route.errors for route in self.routes)


@dataclass
class Recorder:
    """Latency and outcome of every request, by the minute it finished in."""

    started: float
    samples: dict[tuple[int, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    sent: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, route: str, seconds: float, error: str | None) -> None:
        minute = int((time.monotonic() - self.started) // 60) + 1
        with self.lock:
            self.sent[route] += 1
            if error is None:
                self.samples[minute, route].append(seconds)
            else:
                self.errors[minute, route] += 1
                if len(self.error_examples) < 20:
                    self.error_examples.append(f"{route}: {error}")

    def minute(self, minute: int, rss: dict[str, float]) -> Minute:
        rows = []
        with self.lock:
            for route in ROUTES:
                ms = np.array(self.samples[minute, route.name]) * 1000
                rows.append(RouteMinute(
                    route.name, len(ms) + self.errors[minute, route.name],
                    self.errors[minute, route.name],
                    round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
                    round(float(np.percentile(ms, 99)), 1) if len(ms) else None))
        return Minute(minute, rows, rss)


class Load:
    """One paced client thread per route until `stop` is set."""

    def __init__(self, service: service_process.Service, orthanc: local.LocalOrthanc,
                 recorder: Recorder) -> None:
        self.service, self.orthanc, self.recorder = service, orthanc, recorder
        self.stop = threading.Event()
        self.cr = pydicom.dcmread(data_dir() / "dicom_cr" / "RG1_UNCR.dcm")
        self.cr_bytes = (data_dir() / "dicom_cr" / "RG1_UNCR.dcm").read_bytes()
        self.studies_sent: list[str] = []
        self.http = httpx.Client(base_url=service.url, timeout=HTTP_TIMEOUT_S)
        senders: dict[str, Callable[[], str | None]] = {
            "imaging/triage": self.triage, "medication/json": self.review,
            "medication/fhir": self.review_fhir, "cds-hooks/order-sign": self.order_sign,
            "dicom/c-store": self.c_store}
        self.threads = [threading.Thread(target=self._pace, args=(route, senders[route.name]),
                                         name=route.name, daemon=True) for route in ROUTES]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.http.close()

    def _pace(self, route: Route, send: Callable[[], str | None]) -> None:
        next_start = time.monotonic()
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                error = send()
            except Exception as failure:  # a dropped connection, a timeout: an error, go on
                error = f"{type(failure).__name__}: {failure}"
            self.recorder.add(route.name, time.monotonic() - started, error)
            next_start = max(next_start + route.interval_s, time.monotonic())
            self.stop.wait(next_start - time.monotonic())

    def _post(self, path: str, role: str, **body) -> str | None:
        return _refused(self.http.post(path, headers=self.service.headers(role), **body))

    def triage(self) -> str | None:
        answer = self.http.post("/v1/imaging/triage", content=self.cr_bytes, headers={
            **self.service.headers("radiologist"), "Content-Type": "application/dicom"})
        if _refused(answer):
            return _refused(answer)
        return None if answer.json().get("flag") in ("urgent", "routine") else "no triage flag"

    def review(self) -> str | None:
        return self._post("/v1/medication/risk", "pharmacist", json=REVIEW)

    def review_fhir(self) -> str | None:
        return self._post("/v1/medication/risk/fhir", "pharmacist", json=FHIR_BUNDLE)

    def order_sign(self) -> str | None:
        return self._post(SIGN, "pharmacist", json=ORDER_SIGN)

    def c_store(self) -> str | None:
        """The CR as a new study into Orthanc, which routes it on to the gateway."""
        ds = self.cr
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        association = ae.associate("127.0.0.1", self.orthanc.dicom_port, ae_title="ORTHANC")
        if not association.is_established:
            return "association refused"
        try:
            status = association.send_c_store(ds)
        finally:
            association.release()
        if not status or status.Status != 0x0000:
            return f"C-STORE status {status.Status if status else 'none'}"
        self.studies_sent.append(str(ds.StudyInstanceUID))
        return None


def _refused(answer: httpx.Response) -> str | None:
    return None if answer.status_code == 200 else f"HTTP {answer.status_code} {answer.text[:200]}"


def service_processes(service: service_process.Service, gateway: GatewayProcess,
                      orthanc: local.LocalOrthanc) -> dict[str, psutil.Process]:
    """Every process of the stack, named by what it runs."""
    return {**named_processes(service.process.pid),
            "gateway": psutil.Process(gateway.process.pid),
            "orthanc": psutil.Process(orthanc.process.pid)}


def median_mib(samples: list[dict[str, float]]) -> dict[str, float]:
    """Per process, the median of a minute's samples: a request in flight at one instant (a
    7 MB body, its decoded pixels) does not count as growth."""
    return {name: round(float(np.median([sample[name] for sample in samples])), 1)
            for name in samples[0]}


def print_minute(minute: Minute) -> None:
    print(f"\nminute {minute.minute}: {minute.requests} requests, {minute.errors} errors")
    print(f"  {'route':<22}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for row in minute.routes:
        print(f"  {row.route:<22}{row.requests:>9}{row.errors:>8}"
              f"{_ms(row.p50_ms):>9}{_ms(row.p99_ms):>9}")
    print("  RSS MiB: " + ", ".join(f"{name} {mib:.0f}" for name, mib in minute.rss_mib.items()),
          flush=True)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def growth(minutes: list[Minute], warmup: int) -> dict[str, float]:
    """Relative RSS change per process from the end of the warm-up to the end of the run."""
    base, last = minutes[min(warmup, len(minutes)) - 1].rss_mib, minutes[-1].rss_mib
    return {name: round((last[name] - base[name]) / base[name], 3) if base[name] else 1.0
            for name in base}


def results_in_orthanc(orthanc: local.LocalOrthanc, studies: list[str]) -> dict[str, Counter]:
    """Instances per Modality in each study sent (CR, SR, OT: the Secondary Capture). Studies
    are read first: every series they name is then in the series read after them."""
    stored = httpx.get(f"{orthanc.url}/studies?expand", timeout=120).json()
    series = {s["ID"]: s for s in httpx.get(f"{orthanc.url}/series?expand", timeout=120).json()}
    found: dict[str, Counter] = {}
    for study in stored:
        counts: Counter = Counter()
        for series_id in study["Series"]:
            counts[series[series_id]["MainDicomTags"].get("Modality", "")] += len(
                series[series_id]["Instances"])
        found[study["MainDicomTags"]["StudyInstanceUID"]] = counts
    return {uid: found.get(uid, Counter()) for uid in studies}


def incomplete(results: dict[str, Counter]) -> list[str]:
    return [uid for uid, counts in results.items() if counts["SR"] < 1 or counts["OT"] < 1]


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


@dataclass(frozen=True)
class AuditOutcome:
    intact: bool
    rows: int  # every row of the chain, the gateway's and the CLI's included
    protected_rows: int  # rows whose actor is one of the load's users
    reason: str | None


def audit_check(home: Path, actors: set[str], expected: int) -> AuditOutcome:
    trail = AuditTrail(home)

    def protected_rows() -> int:
        return sum(record.actor in actors for record in trail.records())

    wait_until(lambda: protected_rows() >= expected, AUDIT_TIMEOUT_S)
    verified = trail.verify()
    return AuditOutcome(verified.ok, verified.rows, protected_rows(), verified.reason)


@dataclass(frozen=True)
class Report:
    table: list[Minute]
    after_last_minute: Minute  # requests that finished once the last minute was over
    warmup_minutes: int
    sent: dict[str, int]
    error_examples: list[str]
    survivors: bool  # every service process still the one started
    audit: AuditOutcome
    protected_requests: int
    results: dict[str, Counter]  # instances per Modality in each study sent

    @property
    def errors(self) -> int:
        return sum(minute.errors for minute in self.table) + self.after_last_minute.errors

    @property
    def rss_growth(self) -> dict[str, float]:
        return growth(self.table, self.warmup_minutes)

    @property
    def missing(self) -> list[str]:
        return incomplete(self.results)

    @property
    def duplicated(self) -> list[str]:
        return [uid for uid, counts in self.results.items()
                if counts["SR"] > 1 or counts["OT"] > 1]

    @property
    def checks(self) -> dict[str, bool]:
        judged = [g for name, g in self.rss_growth.items() if name != "orthanc"]
        return {
            "no errors": self.errors == 0,
            "no service process died or restarted": self.survivors,
            f"RSS growth <= {MAX_GROWTH:.0%} after warm-up": all(g <= MAX_GROWTH for g in judged),
            "audit chain intact": self.audit.intact,
            "one audit row per protected request":
                self.audit.protected_rows == self.protected_requests,
            "every instance has its SR and SC": not self.missing,
            "no result twice": not self.duplicated,
        }

    def to_json(self) -> dict:
        return {"table": [{**asdict(m), "requests": m.requests, "errors": m.errors}
                          for m in self.table],
                "after_last_minute": asdict(self.after_last_minute), "sent": self.sent,
                "errors": self.errors, "error_examples": self.error_examples,
                "warmup_minutes": self.warmup_minutes, "rss_growth": self.rss_growth,
                "audit": asdict(self.audit), "protected_requests": self.protected_requests,
                "instances": len(self.results), "missing_results": len(self.missing),
                "duplicated_results": len(self.duplicated), "checks": self.checks}


def start_gateway(home: Path, port: int) -> GatewayProcess:
    """`clinassist gateway serve` on `home`, once it answers C-ECHO."""
    gateway = GatewayProcess(home, port, calling="ORTHANC")
    with open(home / "gateway.log", "a") as log:
        gateway.process = subprocess.Popen(
            [*service_process.CLI, "gateway", "serve"], cwd=home, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "CLINASSIST_HOME": str(home)})
    wait_until(lambda: gateway.process.poll() is not None
               or echo(port, calling="ORTHANC") == 0, START_TIMEOUT_S)
    if gateway.process.poll() is not None or echo(port, calling="ORTHANC") != 0:
        gateway.stop()
        log = (home / "gateway.log").read_text()[-2000:]
        raise RuntimeError(f"the gateway did not start: {log}")
    return gateway


def run(minutes: int, warmup: int, scratch: Path) -> Report:
    home = scratch / "home"
    gateway_port = free_port()
    orthanc = local.start(scratch / "orthanc", free_port(), free_port(), gateway_port)
    gateway = service = None
    try:
        write_config(home, allowed_calling_ae_titles=["ORTHANC"], port=gateway_port,
                     destinations=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"],
                     orthanc={"url": orthanc.url}, workers=2, backoff_s=1, max_backoff_s=10)
        gateway = start_gateway(home, gateway_port)
        service = service_process.start(home, timeout=START_TIMEOUT_S)
        processes = service_processes(service, gateway, orthanc)
        recorder = Recorder(time.monotonic())
        load = Load(service, orthanc, recorder)
        load.start()
        table = []
        try:
            for minute in range(1, minutes + 1):
                samples = []
                while (left := recorder.started + minute * 60 - time.monotonic()) > 0:
                    load.stop.wait(min(RSS_SAMPLE_S, left))
                    samples.append(rss_mib(processes))
                table.append(recorder.minute(minute, median_mib(samples)))
                print_minute(table[-1])
        finally:
            load.join()
        survivors = all(process.is_running() for process in processes.values())
        print(f"\nsent: {dict(recorder.sent)}; waiting for the gateway to deliver "
              f"{len(load.studies_sent)} studies' results", flush=True)
        results: dict[str, Counter] = {}

        def delivered() -> bool:
            results.update(results_in_orthanc(orthanc, load.studies_sent))
            return not incomplete(results)

        wait_until(delivered, DRAIN_TIMEOUT_S)
        protected = sum(recorder.sent[route.name] for route in ROUTES if route.protected)
        audit = audit_check(home, {f"test-{role}" for role in ("radiologist", "pharmacist")},
                            protected)
    finally:
        for part in (service, gateway, orthanc):
            if part is not None:
                part.stop()
    return Report(table, recorder.minute(minutes + 1, {}), warmup, dict(recorder.sent),
                  recorder.error_examples, survivors, audit, protected, results)


def print_summary(report: Report) -> None:
    print("\nminute  requests  errors  " + "  ".join(
        f"{route.name} p50/p99 ms" for route in ROUTES))
    for row in report.table:
        cells = [f"{_ms(r.p50_ms)}/{_ms(r.p99_ms)}" for r in row.routes]
        print(f"{row.minute:>6}{row.requests:>10}{row.errors:>8}  "
              + "  ".join(f"{cell:>{len(route.name) + 11}}" for cell, route in zip(cells, ROUTES)))
    print(f"\nRSS growth after warm-up: {report.rss_growth}")
    print(f"audit: {report.audit}, protected requests sent {report.protected_requests}")
    print(f"instances sent {len(report.results)}, without SR or SC {len(report.missing)}, "
          f"with a result twice {len(report.duplicated)}")
    for example in report.error_examples:
        print(f"error: {example}")
    for check, passed in report.checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {check}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--warmup-minutes", type=int, default=2,
                        help="memory growth is measured from this minute on (the first builds "
                             "the knowledge base and warms ONNX Runtime's arenas)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", type=Path,
                        help="run in this new folder and keep it (home, logs, Orthanc storage)")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True)
        report = run(args.minutes, args.warmup_minutes, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
            report = run(args.minutes, args.warmup_minutes, Path(scratch))
    print_summary(report)
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    return 0 if all(report.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
