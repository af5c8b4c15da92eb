"""The per-process engines let go of their SQLite files when asked, and open them again when a
store is next used (the suite asks after every test: see conftest.py); a process's writers of
one file queue for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from clinassist.serving.security import AuditTrail
from clinassist.serving.storage.engine import close_pooled_connections


def open_files_under(folder: Path) -> list[str]:
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed between the listing and the look
            continue
        if target.startswith(str(folder)):
            paths.append(target)
    return paths


def test_closing_pooled_connections_releases_the_files_and_the_store_still_works(tmp_path):
    trail = AuditTrail(tmp_path)
    trail.record("dr-chen", "radiologist", "imaging:triage", "/v1/x", 200, ["P1"])
    assert {Path(path).name for path in open_files_under(tmp_path)} >= {"audit.db",
                                                                        "audit.db-wal"}

    close_pooled_connections()
    assert open_files_under(tmp_path) == []

    trail.record("dr-chen", "radiologist", "imaging:triage", "/v1/x", 200, ["P2"])
    assert [len(record.patients) for record in trail.records()] == [1, 1]
    assert trail.verify().ok


def test_writers_in_one_process_queue_for_the_file_instead_of_meeting_it_locked(tmp_path,
                                                                                 monkeypatch):
    """With SQLite's own wait turned off (busy timeout 0: a second writer is refused at once),
    eight threads appending to one audit trail all succeed: they queue on the process's lock
    for the file, never reaching SQLite while another holds it."""
    from concurrent.futures import ThreadPoolExecutor

    from clinassist.serving.storage import engine

    with monkeypatch.context() as patch:
        patch.setattr(engine, "BUSY_TIMEOUT_S", 0)  # read when the file's engine is made
        trail = AuditTrail(tmp_path)

    def append(thread: int) -> None:
        for row in range(25):
            trail.record("dr-chen", "radiologist", "imaging:triage", f"/v1/{thread}/{row}", 200)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(append, range(8)))
    assert len(trail.records()) == 200 and trail.verify().ok


WRITER = """
import sys
from pathlib import Path
from clinassist.serving.storage import engine
from clinassist.serving.security import AuditTrail
engine.BUSY_TIMEOUT_S = 0  # read when the file's engine is made: SQLite refuses at once
trail = AuditTrail(Path(sys.argv[1]))
engine.BUSY_TIMEOUT_S = 10  # the queue's own patience
for row in range(40):
    trail.record("dr-chen", "radiologist", "imaging:triage", f"/v1/{sys.argv[2]}/{row}", 200)
"""


def test_writers_in_several_processes_queue_for_the_file_too(tmp_path):
    """The same across processes (API workers, the gateway and the CLI share a home): three
    processes with SQLite's wait off append 40 rows each, all succeed, one chain."""
    AuditTrail(tmp_path)  # migrated before the writers start
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(n)],
                                stderr=subprocess.PIPE, text=True) for n in range(3)]
    failures = [w.stderr.read() for w in writers if w.wait(timeout=120) != 0]
    assert failures == []
    trail = AuditTrail(tmp_path)
    assert len(trail.records()) == 120 and trail.verify().ok
