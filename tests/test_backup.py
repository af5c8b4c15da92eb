"""`clinassist backup` and `clinassist restore`: a consistent copy of a live home, put back only
when every checksum and the audit trail's hash chain hold."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from dicom_fixtures import real_cr
import service_process
from service_process import CLI, Service, free_port
from test_gateway_support import wait_for
from clinassist.serving.gateway.queue import Backoff, JobQueue
from clinassist.serving.gateway.worklist import Worklist
from clinassist.serving.imaging.results_store import ResultStore
from clinassist.serving.medication.cds_store import CdsStore
from clinassist.serving.ops.manifest import MANIFEST, sha256_file
from clinassist.serving.security import AuditTrail, UserStore
from clinassist.serving.storage import DATABASE_URL_ENV

REVIEW = {"patient": {"age": 78, "egfr": 38},
          "medications": [{"name": "warfarin"}, {"name": "Advil"}]}


def clinassist(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI on `home`, which need not exist yet."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=home.parent,
                          env={**os.environ, "CLINASSIST_HOME": str(home)})


def serve(home: Path, timeout: float = 120) -> Service:
    """`clinassist serve` on a home that already holds its users (keys are the caller's)."""
    port = free_port()
    with open(home / "service.log", "a") as log:
        process = subprocess.Popen([*CLI, "serve", "--port", str(port)], cwd=home, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "CLINASSIST_HOME": str(home)})
    service = Service(home, f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(service.url + "/readyz", timeout=2).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    service.stop()
    raise RuntimeError(f"service not ready: {(home / 'service.log').read_text()[-2000:]}")


class Writer(threading.Thread):
    """Medication reviews (each one an audit row) and a triage now and then, until stopped."""

    def __init__(self, service: Service) -> None:
        super().__init__(daemon=True)
        self.service, self.statuses = service, []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.service.url, timeout=120) as client:
            while not self.stopping.is_set():
                if len(self.statuses) % 10 == 5:
                    answer = client.post("/v1/imaging/triage", content=real_cr(),
                                         headers={**self.service.headers("radiologist"),
                                                  "Content-Type": "application/dicom"})
                else:
                    answer = client.post("/v1/medication/risk", json=REVIEW,
                                         headers=self.service.headers("pharmacist"))
                self.statuses.append(answer.status_code)

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.statuses) < count:
            assert time.monotonic() < deadline and self.is_alive(), "the writer stalled"
            time.sleep(0.05)


def user_names(home: Path) -> list[str]:
    """Read without keeping the file open (an open file marks a home as in use)."""
    with closing(sqlite3.connect(home / "security.db")) as db:
        return [name for (name,) in db.execute("SELECT name FROM users ORDER BY name")]


def audit_rows(home: Path) -> int:
    with closing(sqlite3.connect(home / "audit.db")) as db:
        return db.execute("SELECT count(*) FROM audit_event").fetchone()[0]


@pytest.fixture
def own_service(tmp_path):
    """A service of its own: the session's shared one has its audit trail tampered with by
    another test, and a backup must find it intact."""
    running = service_process.start(tmp_path / "live")
    yield running
    running.stop()


def test_a_backup_of_a_busy_service_restores_into_a_home_that_serves(own_service, tmp_path):
    service = own_service
    triaged = httpx.post(service.url + "/v1/imaging/triage", content=real_cr(), timeout=120,
                         headers={**service.headers("radiologist"),
                                  "Content-Type": "application/dicom"}).json()
    sr = httpx.get(service.url + triaged["objects"]["sr"], headers=service.headers("radiologist"),
                   timeout=30).content
    writer = Writer(service)
    writer.start()
    try:
        writer.wait_for(3)
        rows_before, requests_before = audit_rows(service.home), len(writer.statuses)
        taken = clinassist(service.home, "backup", str(tmp_path / "backup"))
        rows_after, requests_after = audit_rows(service.home), len(writer.statuses)
    finally:
        writer.stopping.set()
        writer.join()
    assert taken.returncode == 0, taken.stderr
    assert requests_after > requests_before  # the service took writes while the backup ran
    assert set(writer.statuses) == {200}
    manifest = json.loads((tmp_path / "backup" / MANIFEST).read_text())
    assert manifest["audit"]["intact"]
    assert rows_before <= manifest["audit"]["rows"] <= rows_after
    paths = {entry["path"] for entry in manifest["files"]}
    assert {"site.key", "security.db", "audit.db", "kb.sqlite",
            f"results/{triaged['id']}/sr.dcm", f"results/{triaged['id']}/sc.dcm"} <= paths

    restored_home = tmp_path / "restored"
    put_back = clinassist(restored_home, "restore", str(tmp_path / "backup"))
    assert put_back.returncode == 0, put_back.stderr
    restored = serve(restored_home)
    try:
        restored.keys = service.keys
        answer = httpx.get(restored.url + triaged["objects"]["sr"], timeout=30,
                           headers=restored.headers("radiologist"))
        assert (answer.status_code, answer.content) == (200, sr)
        review = httpx.post(restored.url + "/v1/medication/risk", json=REVIEW, timeout=60,
                            headers=restored.headers("pharmacist"))
        assert review.status_code == 200
        # the backup's rows, the restore's own row, then the two requests just made
        expected = manifest["audit"]["rows"] + 3
        wait_for(lambda: audit_rows(restored_home) == expected, 30, "the requests audited")
    finally:
        restored.stop()
    verified = clinassist(restored_home, "audit", "verify")
    assert verified.returncode == 0, verified.stdout
    assert f"intact: {expected} rows" in verified.stdout


class State(NamedTuple):
    home: Path
    result: str  # a stored triage result
    job: str  # a received gateway job, its instance on disk


@pytest.fixture
def state(tmp_path) -> State:
    return make_state(tmp_path / "home")


def make_state(home: Path) -> State:
    """A home with every kind of state, and files that are not state beside them."""
    UserStore(home).add("dr-chen", "radiologist")
    trail = AuditTrail(home)
    for n in range(3):
        trail.record("dr-chen", "radiologist", "imaging:triage", f"/v1/x/{n}", 200, [f"P{n}"])
    result = ResultStore(home / "results").save({"flag": "urgent"}, {"sr": b"SR", "sc": b"SC"})
    job, _ = JobQueue(home, Backoff(3, 1, 1)).receive(b"DICM instance", "1.2.3.4", "PACS")
    Worklist(home).record("1.2.3", "PID-1", "ACC-1", "urgent", 0.9, time.time(), result)
    CdsStore(home / "cds_feedback.db").issued("svc", [("card-1", {
        "type": "interaction", "severity": "major", "ingredients": ["a"], "evidence": "x"})], "1")
    (home / "results" / ".abc.partial").mkdir()
    (home / "results" / ".abc.partial" / "sr.dcm").write_bytes(b"half")
    prometheus = home / "bentoml" / "prometheus_multiproc_dir"
    prometheus.mkdir(parents=True)
    (prometheus / "counter_1.db").write_bytes(b"\0" * 64)
    return State(home, result, job)


def backup(home: Path, destination: Path) -> dict:
    taken = clinassist(home, "backup", str(destination))
    assert taken.returncode == 0, taken.stderr
    return json.loads((destination / MANIFEST).read_text())


def test_the_manifest_lists_every_state_file_and_its_sha256(state, tmp_path):
    manifest = backup(state.home, tmp_path / "backup")
    result, job = state.result, state.job
    assert {entry["path"]: entry["database"] for entry in manifest["files"]} == {
        "security.db": True, "audit.db": True, "cds_feedback.db": True,
        "gateway/queue.db": True, "gateway/worklist.db": True, "site.key": False,
        "gateway/lease-owner": False,  # the id under which this home's gateway holds leases
        f"gateway/instances/{job}.dcm": False, f"results/{result}/sr.dcm": False,
        f"results/{result}/sc.dcm": False, f"results/{result}/summary.json": False}
    for entry in manifest["files"]:
        assert sha256_file(tmp_path / "backup" / entry["path"]) == entry["sha256"]
    assert next(e for e in manifest["files"] if e["path"] == "site.key")["mode"] == 0o600
    assert not list((tmp_path / "backup").rglob("*-wal"))  # each database one closed file
    assert manifest["audit"]["rows"] == 3 and manifest["audit"]["intact"]


def test_a_restored_home_holds_the_same_state(state, tmp_path):
    home = state.home
    backup(home, tmp_path / "backup")
    restored = tmp_path / "restored"
    put_back = clinassist(restored, "restore", str(tmp_path / "backup"))
    assert put_back.returncode == 0, put_back.stderr
    assert (restored / "site.key").read_bytes() == (home / "site.key").read_bytes()
    assert user_names(restored) == ["dr-chen"]
    assert JobQueue(restored, Backoff(3, 1, 1)).counts() == {"received": 1}
    assert ResultStore(restored / "results").read(state.result, "sr") == b"SR"
    # 3 copied rows, the backup's own row (taken after the copy) is not there, the restore's is
    assert [r.action for r in AuditTrail(restored).records()][3:] == ["home:restore"]


def tamper_audit(backup_folder: Path, *statements: str) -> None:
    """Edit the backup's audit.db as someone covering their tracks would, manifest included."""
    path = backup_folder / "audit.db"
    with sqlite3.connect(path) as db:
        db.executescript("DROP TRIGGER audit_event_no_update; DROP TRIGGER audit_event_no_delete;"
                         + ";".join(statements))
    db.close()
    manifest = json.loads((backup_folder / MANIFEST).read_text())
    for entry in manifest["files"]:
        if entry["path"] == "audit.db":
            entry["sha256"], entry["size"] = sha256_file(path), path.stat().st_size
    (backup_folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("statements, reason", [
    (["UPDATE audit_event SET actor = 'someone-else' WHERE id = 2"],
     "broken at row 2: its contents do not match its hash"),
    (["DELETE FROM audit_event WHERE id = 3"], "holds 2 rows .* but the backup recorded 3"),
], ids=["edited-row", "last-row-deleted"])
def test_restore_refuses_an_audit_trail_that_was_tampered_with(state, tmp_path, statements,
                                                               reason):
    backup(state.home, tmp_path / "backup")
    tamper_audit(tmp_path / "backup", *statements)
    refused = clinassist(tmp_path / "restored", "restore", str(tmp_path / "backup"))
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert re.search(reason, refused.stderr), refused.stderr
    assert not (tmp_path / "restored").exists()


def test_restore_refuses_a_corrupted_file_and_names_it(state, tmp_path):
    backup(state.home, tmp_path / "backup")
    damaged = tmp_path / "backup" / f"results/{state.result}/sr.dcm"
    damaged.write_bytes(b"XR")
    refused = clinassist(tmp_path / "restored", "restore", str(tmp_path / "backup"))
    assert refused.returncode == 2
    assert f"{damaged} does not match the backup's manifest" in refused.stderr
    assert "restore another backup" in refused.stderr
    assert not (tmp_path / "restored").exists()


def test_restore_refuses_a_folder_that_is_not_a_backup(tmp_path):
    refused = clinassist(tmp_path / "restored", "restore", str(tmp_path))
    assert refused.returncode == 2
    assert "is not a clinassist backup: it has no manifest.json" in refused.stderr


def test_restore_refuses_a_home_in_use_unless_forced(state, tmp_path):
    backup(state.home, tmp_path / "backup")
    target = tmp_path / "live"
    clinassist(target, "users", "add", "--name", "someone", "--role", "admin")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
         "db.execute('SELECT 1 FROM users'); print('open', flush=True); sys.stdin.read()",
         str(target / "security.db")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        refused = clinassist(target, "restore", str(tmp_path / "backup"))
        assert refused.returncode == 2
        assert f"{target} is in use by pid {holder.pid}" in refused.stderr
        assert user_names(target) == ["someone"]
        forced = clinassist(target, "restore", "--force", str(tmp_path / "backup"))
    finally:
        holder.communicate("")
    assert forced.returncode == 0, forced.stderr
    assert f"pid {holder.pid}" in forced.stdout and "restart them now" in forced.stdout
    assert user_names(target) == ["dr-chen"]
    [previous] = tmp_path.glob("live.before-restore-*")
    assert user_names(previous) == ["someone"]


def test_restore_over_a_stopped_home_keeps_the_old_one_aside(state, tmp_path):
    backup(state.home, tmp_path / "backup")
    target = tmp_path / "stopped"
    clinassist(target, "users", "add", "--name", "someone", "--role", "admin")
    put_back = clinassist(target, "restore", str(tmp_path / "backup"))
    assert put_back.returncode == 0, put_back.stderr
    [previous] = tmp_path.glob("stopped.before-restore-*")
    assert f"kept at {previous}" in put_back.stdout
    assert user_names(previous) == ["someone"]


@pytest.mark.parametrize("where", ["existing", "inside-home"])
def test_backup_refuses_a_destination_it_would_overwrite_or_copy_into_itself(state, tmp_path,
                                                                              where):
    home = state.home
    destination = home / "backups" if where == "inside-home" else tmp_path / "taken"
    if where == "existing":
        destination.mkdir()
        (destination / "old").write_text("keep me")
    refused = clinassist(home, "backup", str(destination))
    assert refused.returncode == 2
    assert ("already exists" if where == "existing" else "is inside the home") in refused.stderr
    assert not list(tmp_path.glob(".*.partial"))


def test_a_broken_trail_is_backed_up_as_evidence_but_reported(state, tmp_path):
    home = state.home
    with sqlite3.connect(home / "audit.db") as db:
        db.executescript("DROP TRIGGER audit_event_no_update;"
                         "UPDATE audit_event SET actor = 'x' WHERE id = 1")
    db.close()
    taken = clinassist(home, "backup", str(tmp_path / "backup"))
    assert taken.returncode == 1
    assert "audit trail is broken at row 1" in taken.stdout
    refused = clinassist(tmp_path / "restored", "restore", str(tmp_path / "backup"))
    assert refused.returncode == 2 and "broken at row 1" in refused.stderr


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_with_the_stores_in_postgresql_a_backup_holds_their_dump_and_puts_it_back(
        database, tmp_path, monkeypatch):
    state = make_state(tmp_path / "home")
    manifest = backup(state.home, tmp_path / "backup")
    dump = manifest["database_dump"]
    assert sha256_file(tmp_path / "backup" / dump["path"]) == dump["sha256"]
    assert {entry["path"] for entry in manifest["files"]} == {
        "site.key", "gateway/lease-owner", f"gateway/instances/{state.job}.dcm",
        *(f"results/{state.result}/{name}" for name in ("sr.dcm", "sc.dcm", "summary.json"))}
    assert manifest["audit"]["rows"] == 3 and manifest["audit"]["intact"]  # in the dump's snapshot
    UserStore(state.home).add("dr-later", "pharmacist")  # after the backup: not brought back

    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "backup", damaged)
    with open(damaged / dump["path"], "r+b") as file:
        file.seek(dump["size"] // 2)
        file.write(b"\xff\xfe")
    refused = clinassist(tmp_path / "restored-damaged", "restore", str(damaged))
    assert refused.returncode == 2 and "does not match the backup's manifest" in refused.stderr
    assert [u.name for u in UserStore(state.home).list()] == ["dr-chen", "dr-later"]

    with monkeypatch.context() as unset:
        unset.delenv(DATABASE_URL_ENV)
        refused = clinassist(tmp_path / "restored-nowhere", "restore", str(tmp_path / "backup"))
    assert refused.returncode == 2 and "set CLINASSIST_DATABASE_URL" in refused.stderr

    restored = tmp_path / "restored"
    put_back = clinassist(restored, "restore", str(tmp_path / "backup"))
    assert put_back.returncode == 0, put_back.stderr
    assert [u.name for u in UserStore(restored).list()] == ["dr-chen"]
    assert JobQueue(restored, Backoff(3, 1, 1)).counts() == {"received": 1}
    assert (restored / "gateway" / "instances" / f"{state.job}.dcm").read_bytes() == \
        b"DICM instance"
    assert [r.action for r in AuditTrail(restored).records()][3:] == ["home:restore"]
    assert AuditTrail(restored).verify().ok


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_the_postgresql_snapshot_holds_the_queue_still_while_instances_are_copied(
        database, tmp_path):
    from clinassist.serving.ops.database_dump import snapshot
    from clinassist.serving.storage import database_url

    queue = JobQueue(tmp_path / "home", Backoff(3, 1, 1))
    queue.receive(b"DICM first", "1.2.3.1", "PACS")
    received = threading.Event()
    late = threading.Thread(target=lambda: (queue.receive(b"DICM late", "1.2.3.2", "PACS"),
                                            received.set()), daemon=True)
    with snapshot(database_url()):
        late.start()
        assert not received.wait(2)  # a job arriving now waits for the copy to end
    assert received.wait(30)
    assert queue.counts() == {"received": 2}
