"""The hash-chained audit trail: append-only, tamper-evident, pseudonymised, FHIR-exportable."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from datetime import UTC, datetime

import pytest

from clinassist.serving.security import AuditTrail, collection_bundle, load_site_key, pseudonymise
from clinassist.serving.storage.group_commit import GroupCommit
from store_sql import drop_append_only, raw

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite, then on PostgreSQL

RAW_ID = "MRN-7731"
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


@pytest.fixture
def trail(tmp_path, database):
    trail = AuditTrail(tmp_path)
    trail.record("alice", "radiologist", "imaging:triage", "/triage", 200, [RAW_ID])
    trail.record("bob", "pharmacist", "cds:invoke", "/cds-services/med-risk", 403)
    trail.record("carol", "admin", "audit:read", "/audit", 500, detail="database locked")
    trail.record("dave", "gateway", "imaging:results", "/results/1", "success")
    return trail


def tamper(trail: AuditTrail, database: str | None, *statements: str) -> None:
    """Run SQL on the trail as an attacker with access to the file or the database server
    would: triggers dropped first."""
    with raw(trail._db, database) as db:
        drop_append_only(db, "audit_event")
        for statement in statements:
            db.execute(statement)


def test_untouched_chain_verifies(trail):
    result = trail.verify()
    assert (result.ok, result.rows, result.first_broken_id, result.reason) == (True, 4, None, None)
    assert result.head_hash == trail.records()[-1].row_hash


def test_empty_trail_verifies(tmp_path):
    assert AuditTrail(tmp_path).verify().rows == 0


def test_rows_chain_from_genesis_in_order(trail):
    records = trail.records()
    assert [r.id for r in records] == [1, 2, 3, 4]
    assert [r.outcome for r in records] == ["200", "403", "500", "success"]
    assert len({r.row_hash for r in records}) == 4
    assert all(r.recorded.tzinfo is not None for r in records)


@pytest.mark.parametrize("statement", [
    "UPDATE audit_event SET outcome = '200' WHERE id = 2",
    "DELETE FROM audit_event WHERE id = 2",
])
def test_update_and_delete_are_refused_by_the_database(trail, database, statement):
    with raw(trail._db, database) as db, pytest.raises(Exception, match="append-only"):
        db.execute(statement)
    assert trail.verify().ok


def test_truncate_is_refused_by_postgresql(trail, database):
    if database is None:
        pytest.skip("SQLite has no TRUNCATE (DELETE is refused above)")
    with raw(trail._db, database) as db, pytest.raises(Exception, match="append-only"):
        db.execute("TRUNCATE audit_event")
    assert trail.verify().rows == 4


def test_edited_row_is_reported(trail, database):
    tamper(trail, database, "UPDATE audit_event SET outcome = '200' WHERE id = 2")
    result = trail.verify()
    assert (result.ok, result.rows, result.first_broken_id) == (False, 1, 2)
    assert "edited" in result.reason


def row_hash(row: dict) -> str:
    """The documented formula: sha256(prev_hash + canonical JSON of the row's columns)."""
    content = {column: row[column] for column in row.keys()
               if column not in ("prev_hash", "row_hash")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((row["prev_hash"] + canonical).encode()).hexdigest()


def test_row_hash_is_sha256_of_the_previous_hash_and_the_row(trail, database):
    with raw(trail._db, database) as db:
        rows = [dict(row) for row in db.execute("SELECT * FROM audit_event ORDER BY id")]
    assert rows[0]["prev_hash"] == "0" * 64
    assert [row["prev_hash"] for row in rows[1:]] == [row["row_hash"] for row in rows[:-1]]
    assert all(row_hash(row) == row["row_hash"] for row in rows)


def test_edited_and_rehashed_row_breaks_the_link_to_the_next(trail, database):
    with raw(trail._db, database) as db:
        row = dict(db.execute("SELECT * FROM audit_event WHERE id = 2").fetchone())
    row["outcome"] = "200"
    forged = row_hash(row)
    tamper(trail, database, f"UPDATE audit_event SET outcome = '200', row_hash = '{forged}' WHERE id = 2")
    result = trail.verify()
    assert (result.ok, result.first_broken_id) == (False, 3)
    assert "link" in result.reason


def test_deleted_middle_row_is_reported(trail, database):
    tamper(trail, database, "DELETE FROM audit_event WHERE id = 2")
    result = trail.verify()
    assert (result.ok, result.first_broken_id) == (False, 3)
    assert "deleted" in result.reason


def test_deleted_row_hidden_by_renumbering_is_reported(trail, database):
    tamper(trail, database, "DELETE FROM audit_event WHERE id = 2",
           "UPDATE audit_event SET id = id - 1 WHERE id > 2")
    result = trail.verify()
    assert (result.ok, result.first_broken_id) == (False, 2)


def test_reordered_rows_are_reported(trail, database):
    tamper(trail, database, "UPDATE audit_event SET id = 99 WHERE id = 2",
           "UPDATE audit_event SET id = 2 WHERE id = 3",
           "UPDATE audit_event SET id = 3 WHERE id = 99")
    result = trail.verify()
    assert (result.ok, result.first_broken_id) == (False, 2)


def test_dropped_triggers_come_back_when_the_trail_is_opened(trail, database, tmp_path):
    tamper(trail, database)
    AuditTrail(tmp_path)
    with raw(trail._db, database) as db, pytest.raises(Exception, match="append-only"):
        db.execute("DELETE FROM audit_event")


def test_raw_patient_ids_never_reach_the_database(trail, database, tmp_path):
    pseudonym = pseudonymise(RAW_ID, load_site_key(tmp_path))
    assert trail.records()[0].patients == (pseudonym,)
    if database is None:
        stored = b"".join(path.read_bytes() for path in tmp_path.glob("audit.db*")).decode(
            "utf-8", "replace")
    else:
        with raw(trail._db, database) as db:
            stored = " ".join(str(value) for row in db.execute("SELECT * FROM audit_event")
                              for value in row.values())
    assert RAW_ID not in stored
    assert pseudonym in stored


def test_patient_ids_are_deduplicated_and_a_single_string_is_one_id(tmp_path):
    trail = AuditTrail(tmp_path)
    key = load_site_key(tmp_path)
    assert trail.record("a", "admin", "x", "/x", 200, ["P1", "P2", "P1"]).patients == (
        pseudonymise("P1", key), pseudonymise("P2", key))
    assert trail.record("a", "admin", "x", "/x", 200, "P12").patients == (
        pseudonymise("P12", key),)


@pytest.mark.parametrize("outcome", ["ok", 42, 600, ""])
def test_record_refuses_an_outcome_that_is_not_a_status_or_word(tmp_path, outcome):
    with pytest.raises(ValueError, match="HTTP status code"):
        AuditTrail(tmp_path).record("alice", "admin", "audit:read", "/audit", outcome)


def test_concurrent_writers_keep_one_unbroken_chain(tmp_path):
    trail = AuditTrail(tmp_path)

    def write(worker: int) -> None:
        for n in range(5):
            trail.record(f"user{worker}", "admin", "audit:read", f"/r/{n}", 200)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = trail.verify()
    assert (result.ok, result.rows) == (True, 20)


# FHIR export


def test_fhir_export_has_the_required_r4_elements(trail, tmp_path):
    events = trail.export_fhir()
    assert len(events) == 4
    for event in events:
        assert event["resourceType"] == "AuditEvent"
        assert set(event["type"]) >= {"system", "code"}
        assert INSTANT.fullmatch(event["recorded"])
        assert event["outcome"] in {"0", "4", "8"}
        assert event["agent"] and all(isinstance(a["requestor"], bool) for a in event["agent"])
        assert event["source"]["observer"] == {"display": "clinassist"}
    assert [e["outcome"] for e in events] == ["0", "4", "8", "0"]
    first = events[0]
    assert first["agent"][0]["who"] == {"display": "alice"}
    assert first["agent"][0]["role"] == [{"text": "radiologist"}]
    assert first["action"] == "E"
    assert first["subtype"][0]["code"] == "imaging:triage"
    resource, patient = first["entity"]
    assert resource["what"] == {"display": "/triage"}
    assert patient["what"]["identifier"]["value"] == pseudonymise(RAW_ID, load_site_key(tmp_path))
    assert patient["type"]["code"] == "Patient" and patient["role"]["code"] == "1"
    assert RAW_ID not in repr(events)


def test_fhir_event_type_marks_refusals_and_audit_reads(trail):
    types = [(e["type"]["system"].rsplit("/", 1)[-1], e["type"]["code"])
             for e in trail.export_fhir()]
    assert types == [("audit-event-type", "rest"), ("DCM", "110113"), ("DCM", "110101"),
                     ("audit-event-type", "rest")]
    assert trail.export_fhir()[2]["outcomeDesc"] == "HTTP 500: database locked"


def test_export_since_keeps_later_events(trail):
    cutoff = datetime.now(UTC)
    trail.record("erin", "admin", "audit:read", "/audit", 200)
    assert [e["agent"][0]["who"]["display"] for e in trail.export_fhir(since=cutoff)] == ["erin"]
    with pytest.raises(ValueError, match="time zone"):
        trail.export_fhir(since=datetime(2020, 1, 1))


def test_collection_bundle_wraps_the_events(trail):
    bundle = collection_bundle(trail.export_fhir())
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "collection")
    assert [entry["resource"]["id"] for entry in bundle["entry"]] == ["1", "2", "3", "4"]


WRITER = """
import sys
from pathlib import Path
from clinassist.serving.security import AuditTrail
trail = AuditTrail(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
for n in range(int(sys.argv[2])):
    trail.record(f"writer-{sys.argv[3]}", "admin", "audit:read", f"/r/{n}", 200)
"""


def test_writers_in_several_processes_append_to_one_chain(tmp_path, database):
    """Each process appends as a replica would, all released at once: the appends serialise
    (SQLite's write lock; PostgreSQL's advisory lock), so no two rows chain to the same one."""
    import subprocess
    import sys

    AuditTrail(tmp_path)  # the site key and the tables, before the writers race for them
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "15", str(n)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for n in range(3)]
    for writer in writers:
        assert writer.stdout.readline() == "ready\n"
    for writer in writers:
        writer.stdin.write("go\n")
        writer.stdin.flush()
    assert [writer.wait(120) for writer in writers] == [0, 0, 0]
    trail = AuditTrail(tmp_path)
    result = trail.verify()
    assert (result.ok, result.rows) == (True, 45)
    assert sorted(r.actor for r in trail.records()) == sorted(
        f"writer-{n}" for n in range(3) for _ in range(15))


def test_concurrent_records_share_commits_and_each_returns_its_own_row(tmp_path, monkeypatch):
    """Group commit: threads recording at once are written in fewer transactions than rows,
    and each caller gets back the row it handed in."""
    trail = AuditTrail(tmp_path)
    batches: list[int] = []
    append = trail._append

    def slow_append(rows):
        batches.append(len(rows))
        time.sleep(0.02)  # a slow disk: rows handed in meanwhile wait for the next write
        return append(rows)

    monkeypatch.setattr(trail, "_append", slow_append)
    trail._appends = GroupCommit(trail._append)
    returned: dict[int, list] = {}

    def write(worker: int) -> None:
        returned[worker] = [trail.record(f"user{worker}", "admin", "audit:read", f"/r/{n}", 200)
                            for n in range(10)]

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(batches) == 80 and len(batches) < 40 and max(batches) > 1
    stored = {record.id: record for record in trail.records()}
    assert trail.verify().ok and len(stored) == 80
    for worker, records in returned.items():
        assert [(r.actor, r.resource) for r in records] == [
            (f"user{worker}", f"/r/{n}") for n in range(10)]
        assert all(stored[r.id] == r for r in records)


KILLED_WRITER = """
import sys, threading
from pathlib import Path
from clinassist.serving.security import AuditTrail
trail = AuditTrail(Path(sys.argv[1]))
printed = threading.Lock()

def write(worker):
    for n in range(10_000):
        record = trail.record(f"writer-{worker}", "admin", "audit:read", f"/r/{n}", 200)
        with printed:
            print(record.id, record.actor, record.resource, flush=True)

for worker in range(8):
    threading.Thread(target=write, args=(worker,)).start()
"""


def test_a_row_whose_record_returned_survives_kill_9(tmp_path, database):
    """Eight threads record at once (so commits are shared) until the process is killed with
    SIGKILL: every row whose `record` had returned is in the trail, and the chain verifies."""
    import signal
    import subprocess
    import sys

    AuditTrail(tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    answered = [writer.stdout.readline().split() for _ in range(300)]
    writer.send_signal(signal.SIGKILL)
    writer.wait(30)
    answered += [line.split() for line in writer.stdout.read().splitlines()]
    trail = AuditTrail(tmp_path)
    result = trail.verify()
    stored = {str(r.id): [r.actor, r.resource] for r in trail.records()}
    assert result.ok and result.rows == len(stored) >= len(answered) >= 300
    assert all(stored[row_id] == rest for row_id, *rest in answered)
