"""The one SQLite opener every store uses keeps SQLite's own locks intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from clinassist.serving.security.database import Database

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x);"
OTHER_PROCESS = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
                 "db.execute('SELECT * FROM t').fetchall(); db.close()")


def test_opening_a_store_twice_keeps_the_lock_that_protects_the_wal(tmp_path):
    """While this process has the database open, another process closing its own connection
    must not checkpoint and delete the WAL: that happens if our locks were dropped, as closing
    any descriptor of the file outside SQLite does (the store files were once opened so, to
    set their mode), and then the two processes corrupt the file between them."""
    path = tmp_path / "store.db"
    first = Database(path, SCHEMA)
    with first.transaction() as db:
        db.execute("INSERT INTO t VALUES (1)")
    Database(path, SCHEMA)  # a second store on the same file, as a service opens several
    subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(path)], check=True)
    assert Path(f"{path}-wal").exists()
    assert [row[0] for row in first.query("SELECT x FROM t")] == [1]


def test_a_new_store_file_is_private(tmp_path):
    Database(tmp_path / "store.db", SCHEMA)
    assert (tmp_path / "store.db").stat().st_mode & 0o777 == 0o600
