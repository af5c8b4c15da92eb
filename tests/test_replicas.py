"""Replicas that share the work: two API processes and two gateways on one PostgreSQL and one
Orthanc, each with its own home (the site key shared, as a Secret would be), the gateways'
spool, every result and the model store in shared folders. A mixed load (triage over HTTP,
C-STOREs) runs while one API and one gateway are killed with SIGKILL; what they left
unanswered goes to the
survivors, as a load balancer would send it. Then: every acknowledged instance triaged once
(one job, done, one SR and one SC in Orthanc), every answered request audited exactly once,
the chain verifies, and no row is left claimed by the dead gateway."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import httpx
import psycopg
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from clinassist.serving.gateway.orthanc import local
from clinassist.serving.gateway.queue import Backoff, JobQueue
from clinassist.serving.imaging.model_registry import MODEL_STORE_ENV
from clinassist.serving.imaging.results_store import RESULTS_DIR_ENV
from clinassist.serving.security import AuditTrail, load_site_key, pseudonymise
from clinassist.serving.storage import DATABASE_URL_ENV
from service_process import free_port, start
from test_gateway_support import GatewayProcess, radiograph, send, wait_for, write_config

REQUESTS, INSTANCES = 16, 16  # triage requests over HTTP, C-STOREs to the gateways
KILL_AFTER = 4  # answers from the first API (acknowledgements from the first gateway)
RETRY_AFTER_503_S = 2
LEASE_S = 5.0
SUCCESS = 0x0000
TRIAGE = "/v1/imaging/triage"
SOP_CLASS, STUDY = "00080016", "0020000D"
pytestmark = pytest.mark.skipif(not shutil.which("Orthanc"), reason="needs Debian's orthanc")


def dicom(index: int) -> tuple[str, bytes]:
    ds = radiograph(1000 + index)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return str(ds.PatientID), buffer.getvalue()


def kill(process) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_two_apis_and_two_gateways_share_the_work_and_survive_a_kill_each(
        tmp_path, postgres, monkeypatch):
    started = time.monotonic()
    url = postgres.create_database()
    shared = tmp_path / "shared"
    env = {DATABASE_URL_ENV: url, RESULTS_DIR_ENV: str(shared / "results"),
           MODEL_STORE_ENV: str(shared / "models")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    homes = [tmp_path / name for name in ("api-1", "api-2", "gateway-1", "gateway-2")]
    trail = AuditTrail(homes[0])  # the site key and the tables, before the replicas start
    for home in homes[1:]:
        home.mkdir()
        shutil.copy(homes[0] / "site.key", home / "site.key")
    key = load_site_key(homes[0])
    orthanc = local.start(tmp_path / "orthanc", free_port(), free_port(), None)
    gateways: list[GatewayProcess] = []
    apis = []
    try:
        for home in homes[2:]:
            write_config(home, destinations=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"],
                         spool=str(shared / "spool"), lease_s=LEASE_S, workers=2)
        with ThreadPoolExecutor(4) as starting:
            first_api = starting.submit(start, homes[0], env)
            gateway_starts = [starting.submit(lambda h=h: GatewayProcess(
                h, _port(h), env=env).start()) for h in homes[2:]]
            apis.append(first_api.result())
            apis.append(start(homes[1], env, keys=apis[0].keys))  # the users are shared
            gateways.extend(g.result() for g in gateway_starts)
        loaded = time.monotonic()

        # The HTTP load: requests alternate between the APIs, two at a time; the first API is
        # killed after its KILL_AFTER-th answer, and what it did not answer is sent again.
        bodies = [dicom(n) for n in range(REQUESTS)]
        answers: dict[int, tuple[int, int]] = {}  # request -> (API, status)
        first_answers = threading.Semaphore(0)
        lock = threading.Lock()

        retried_503 = []

        def triage(n: int) -> None:
            """As a load balancer does: a replica that is gone, or answers 503 (its model
            service shedding load or unreachable: "retry"), is tried again on the survivor."""
            for api in (n % 2, 1, 1, 1):
                try:
                    response = httpx.post(apis[api].url + TRIAGE, content=bodies[n][1],
                                          headers={**apis[api].headers("radiologist"),
                                                   "Content-Type": "application/dicom"},
                                          timeout=120)
                except httpx.TransportError:  # killed: the survivor gets it
                    continue
                if api == 0:
                    first_answers.release()
                if response.status_code == 503:
                    retried_503.append(api)
                    time.sleep(RETRY_AFTER_503_S)
                    continue
                with lock:
                    answers[n] = (api, response.status_code)
                return

        def kill_first_api() -> None:
            for _ in range(KILL_AFTER):
                first_answers.acquire()
            kill(apis[0].process)

        # The DICOM load: half the instances to each gateway; the first is killed after its
        # KILL_AFTER-th acknowledgement and its unacknowledged instances go to the other.
        instances = [radiograph(2000 + n) for n in range(INSTANCES)]
        halves = [instances[0::2], instances[1::2]]

        orphaned: list[int] = []  # rows the dead gateway held when it died

        def kill_first_gateway(index: int, status: int | None) -> None:
            if index == KILL_AFTER - 1:
                kill(gateways[0].process)
                orphaned.append(held_by(url, homes[2]))

        with ThreadPoolExecutor(6) as load:
            killer = load.submit(kill_first_api)
            list(load.map(triage, range(REQUESTS)))
            first = load.submit(send, gateways[0].port, halves[0], after_each=kill_first_gateway)
            second = load.submit(send, gateways[1].port, halves[1])
            statuses = dict(zip(map(id, halves[0]), first.result()))
            statuses.update(zip(map(id, halves[1]), second.result()))
            killer.result()
        assert apis[0].process.poll() is not None
        left = [ds for ds in instances if statuses[id(ds)] != SUCCESS]
        killed_statuses, survivor_statuses = ([statuses[id(ds)] for ds in half] for half in halves)
        assert killed_statuses[:KILL_AFTER] == [SUCCESS] * KILL_AFTER and \
            SUCCESS not in killed_statuses[KILL_AFTER:], f"killed too late: {killed_statuses}"
        assert survivor_statuses == [SUCCESS] * len(survivor_statuses), \
            f"the surviving gateway did not acknowledge all (None: no answer): {survivor_statuses}"
        assert send(gateways[1].port, left) == [SUCCESS] * len(left)

        # Every request answered once (by the survivor when the first API died), 200.
        assert sorted(answers) == list(range(REQUESTS))
        assert {status for _, status in answers.values()} == {200}
        answered_by = Counter(api for api, _ in answers.values())
        assert answered_by[0] + retried_503.count(0) >= KILL_AFTER  # 503s count as answers
        assert answered_by[1] >= REQUESTS // 2

        # Every acknowledged instance triaged and delivered: one job each, all done, no claim
        # left (the dead gateway's leases expired and the survivor took its rows).
        queue = JobQueue(tmp_path / "observer", Backoff(3, 1, 1))
        wait_for(lambda: queue.counts() == {"done": INSTANCES}, 180, "every job done")
        assert sorted(job.sop_instance_uid for job in queue.jobs()) == sorted(
            str(ds.SOPInstanceUID) for ds in instances)
        assert queue.expired_claims() == 0 and queue.held_claims() == 0
        assert held_by(url, homes[2]) == 0

        def results_in_orthanc() -> Counter | None:
            found = httpx.get(f"{orthanc.url}/dicom-web/instances", timeout=30).json()
            kinds = Counter((i[STUDY]["Value"][0], i[SOP_CLASS]["Value"][0]) for i in found)
            return kinds if len(found) >= 2 * INSTANCES else None

        kinds = wait_for(results_in_orthanc, 60, "an SR and an SC per instance in Orthanc")
        assert kinds == Counter({(str(ds.StudyInstanceUID), kind): 1 for ds in instances
                                 for kind in (Comprehensive3DSRStorage,
                                              SecondaryCaptureImageStorage)})

        # Audit: one chain; each answered request exactly one row; each instance received
        # (every acknowledgement has its row) and its triage audited.
        result = trail.verify()
        records = trail.records()
        assert result.ok and result.rows == len(records)
        triaged = Counter(r.patients for r in records if r.action == "imaging:triage")
        resent = {n for n, (api, _) in answers.items() if api != n % 2}
        for n, (patient, _) in enumerate(bodies):
            rows = triaged[(pseudonymise(patient, key),)]
            # a request the killed API had audited but not answered has that row as well
            assert rows == 1 if n not in resent else 1 <= rows <= 2, (n, rows)
        received = Counter(r.resource for r in records if r.action == "gateway:receive"
                           and r.outcome == "success")
        processed = Counter(r.resource for r in records if r.action == "gateway:process")
        jobs = {job.id for job in queue.jobs()}
        assert set(received) == jobs and set(processed) == jobs
        assert sum(received.values()) == INSTANCES  # each acknowledged once, by one gateway
        retriaged = sum(processed.values()) - INSTANCES  # by the survivor, after the kill
        assert 0 <= retriaged <= 2  # the dead gateway's two workers
        print(f"\nreplicas: {REQUESTS} requests ({answered_by[0]} answered by the API killed "
              f"after {KILL_AFTER}, {answered_by[1]} by the other, {len(resent)} of them sent "
              f"again, {len(retried_503)} answers of 503 retried), {INSTANCES} instances ({len(left)} sent again after the "
              f"gateway kill, {orphaned[0]} rows claimed by it when it died, "
              f"{retriaged} triaged twice, 0 lost), {result.rows} audit rows; "
              f"start {loaded - started:.0f} s, load and recovery "
              f"{time.monotonic() - loaded:.0f} s")
    finally:
        for gateway in gateways:
            gateway.stop()
        for api in apis:
            if api.process.poll() is None:
                api.stop()
        orthanc.stop()


def held_by(url: str, home) -> int:
    """Queue rows claimed under the lease owner id of the gateway in `home`."""
    owner = (home / "gateway" / "lease-owner").read_text().strip()
    with psycopg.connect(url) as connection:
        return sum(connection.execute(
            f"SELECT count(*) FROM gateway_queue.{table} WHERE lease_owner = %s",
            (owner,)).fetchone()[0] for table in ("job", "delivery"))


def _port(home) -> int:
    import json

    return json.loads((home / "gateway.json").read_text())["port"]
