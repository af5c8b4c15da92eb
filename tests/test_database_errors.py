"""A missing, locked or damaged database stops every command that needs it, the service and
gateway starts included, with one message naming the file and the remedy: exit status 2 and
no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from service_process import CLI, free_port
from test_gateway_support import write_config
from clinassist.processes import stop_group
from clinassist.serving.gateway.queue import Backoff, JobQueue
from clinassist.serving.gateway.worklist import Worklist
from clinassist.serving.medication.cds_store import CdsStore
from clinassist.serving.security import AuditTrail, UserStore

RESTORE = "clinassist restore BACKUP"
REBUILD = "clinassist kb build"
COMMAND_TIMEOUT_S = 120  # a command that does not fail as it should is stopped, and fails
WARD = ("patient,age,sex,egfr,allergies,conditions,medication,rxnorm,atc\n"
        "w1,78,female,38,,,warfarin,,\n")
COMMANDS = {
    "users list": ["users", "list"],
    "users add": ["users", "add", "--name", "dr-new", "--role", "radiologist"],
    "audit verify": ["audit", "verify"],
    "audit export": ["audit", "export"],
    "gateway status": ["gateway", "status"],
    "gateway retry": ["gateway", "retry", "--all"],
    "gateway serve": ["gateway", "serve"],
    "medication review": ["medication", "review", "ward.csv"],
    "backup": ["backup", "../backup-copy"],
    "serve": ["serve", "--port", "{port}"],
}
# Each database and the commands that open it.
USERS = {
    "security.db": ["users list", "users add", "serve", "backup"],
    "audit.db": ["audit verify", "audit export", "users add", "gateway serve", "serve", "backup"],
    "gateway/queue.db": ["gateway status", "gateway retry", "gateway serve", "serve", "backup"],
    "gateway/worklist.db": ["serve", "backup"],
    "cds_feedback.db": ["serve", "backup"],
    "kb.sqlite": ["medication review", "serve", "backup"],
}


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None: still running after COMMAND_TIMEOUT_S, then stopped
    stdout: str
    stderr: str


def run_all(home: Path, names: list[str]) -> dict[str, Outcome]:
    """Run the commands at once (each waits out the same lock), in their own process groups."""
    return outcomes_of(start_all(home, names))


def start_all(home: Path, names: list[str]) -> dict[str, subprocess.Popen]:
    processes = {}
    for name in names:
        args = [arg.format(port=free_port()) for arg in COMMANDS[name]]
        processes[name] = subprocess.Popen(
            [*CLI, *args], cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, env={**os.environ, "CLINASSIST_HOME": str(home)})
    return processes


def outcomes_of(processes: dict[str, subprocess.Popen]) -> dict[str, Outcome]:
    outcomes = {}
    for name, process in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
            outcomes[name] = Outcome(process.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            stop_group(process)
            stdout, stderr = process.communicate()
            outcomes[name] = Outcome(None, stdout, stderr)
    return outcomes


def assert_refused(outcomes: dict[str, Outcome], *expected: str) -> None:
    for name, outcome in outcomes.items():
        assert outcome.returncode == 2, (name, outcome)
        assert "Traceback" not in outcome.stderr, (name, outcome.stderr)
        for text in expected:
            assert text in outcome.stderr, (name, text, outcome.stderr)


@pytest.fixture(scope="module")
def complete_home(tmp_path_factory) -> Path:
    """Every database a home can hold, created by its own store."""
    home = tmp_path_factory.mktemp("complete") / "home"
    UserStore(home).add("dr-chen", "radiologist")
    AuditTrail(home).record("dr-chen", "radiologist", "imaging:triage", "/v1/x", 200, ["P1"])
    JobQueue(home, Backoff(3, 1, 1))
    Worklist(home)
    CdsStore(home / "cds_feedback.db")
    (home / "kb.sqlite").write_bytes(b"")  # replaced by each test that needs it
    write_config(home, allowed_calling_ae_titles=["PACS"])
    (home / "ward.csv").write_text(WARD)
    return home


@pytest.fixture
def home(complete_home, tmp_path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(complete_home, copy)
    return copy


@pytest.mark.parametrize("database", list(USERS))
def test_a_file_that_is_not_sqlite_is_named_with_its_remedy(home, database):
    path = home / database
    for sidecar in ("-wal", "-shm"):
        Path(f"{path}{sidecar}").unlink(missing_ok=True)
    path.write_bytes(b"this is not a database; " * 200)
    remedy = REBUILD if database == "kb.sqlite" else RESTORE
    assert_refused(run_all(home, USERS[database]),
                   f"{path} is not a usable SQLite database", remedy)


AUDITED = ["audit verify", "users add", "gateway serve", "serve"]


def test_a_missing_audit_trail_beside_its_key_is_reported_not_started_anew(home):
    for path in home.glob("audit.db*"):
        path.unlink()
    assert_refused(run_all(home, AUDITED), f"{home / 'audit.db'} is missing, but "
                   f"{home / 'site.key'} shows this home kept an audit trail", RESTORE)
    assert not (home / "audit.db").exists()


def test_a_missing_site_key_beside_its_trail_is_reported_not_made_anew(home):
    (home / "site.key").unlink()
    assert_refused(run_all(home, AUDITED), f"{home / 'site.key'} is missing, but "
                   f"{home / 'audit.db'} holds pseudonyms made with it", RESTORE)
    assert not (home / "site.key").exists()


LOCK_HOLDER = """
import sqlite3, sys
held = []
for path in sys.argv[2:]:
    db = sqlite3.connect(path, isolation_level=None)
    if sys.argv[1] == "exclusive":
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
    db.execute("BEGIN EXCLUSIVE")
    held.append(db)
print("held", flush=True)
sys.stdin.read()
"""


def hold_locks(mode: str, *paths: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, mode, *map(str, paths)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_database_another_process_locks_names_that_process(home, tmp_path):
    """An exclusive lock keeps out readers too; a write lock only the commands that write."""
    writers_home = tmp_path / "writers"
    shutil.copytree(home, writers_home)
    exclusive = hold_locks("exclusive", home / "security.db", home / "audit.db",
                           home / "gateway" / "queue.db")
    writer = hold_locks("write", writers_home / "security.db")
    try:  # both sets at once: each command waits out the busy timeout
        locking = start_all(home, ["users list", "audit verify", "gateway status",
                                   "gateway serve", "serve", "backup"])
        write_locked = run_all(writers_home, ["users add", "users list"])
        locked = outcomes_of(locking)
    finally:
        exclusive.communicate("")
        writer.communicate("")
    assert_refused(locked, "is locked by pid", "stop the process holding the lock")
    for name, outcome in locked.items():
        assert f"pid {exclusive.pid} " in outcome.stderr, (name, outcome.stderr)
    assert_refused({"users add": write_locked["users add"]},
                   f"{writers_home / 'security.db'} is locked by pid {writer.pid} ")
    assert write_locked["users list"].returncode == 0  # readers do not wait for a writer
