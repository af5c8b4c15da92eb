"""The gateway's catch-up position on SQLite, then on PostgreSQL: one position per Orthanc,
kept across openings, 64-bit like Orthanc's Seq, able to go back to the start (Orthanc's
database replaced); and a changes.db written before migrations is taken over as it is."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from clinassist.serving.gateway.catchup import FeedPosition
from clinassist.serving.storage import DATABASE_URL_ENV
from store_sql import raw

LOCAL, REMOTE = "http://127.0.0.1:8042", "https://pacs.example.org"


def test_the_position_is_kept_per_orthanc_and_may_go_back(tmp_path, database):
    first = FeedPosition(tmp_path, LOCAL)
    assert first.load() == 0
    first.save(120)
    FeedPosition(tmp_path, REMOTE).save(2**40)  # past 32 bits
    assert FeedPosition(tmp_path, LOCAL).load() == 120
    assert FeedPosition(tmp_path, REMOTE).load() == 2**40
    first.save(0)  # Orthanc's database was replaced: read its new log from the start
    assert FeedPosition(tmp_path, LOCAL).load() == 0
    with raw(first._db, database) as db:
        rows = sorted((row["feed"], row["seq"]) for row in db.execute(
            "SELECT feed, seq FROM feed_position"))
    assert rows == [(LOCAL, 0), (REMOTE, 2**40)]


def test_a_changes_file_from_before_migrations_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)  # only SQLite homes are that old
    (tmp_path / "gateway").mkdir()
    with closing(sqlite3.connect(tmp_path / "gateway" / "changes.db")) as db, db:
        db.execute("CREATE TABLE feed_position (feed TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
        db.execute("INSERT INTO feed_position VALUES (?, 4711)", (LOCAL,))
    position = FeedPosition(tmp_path, LOCAL)
    assert position.load() == 4711
    position.save(4712)
    with raw(position._db, None) as db:
        assert [r["version_num"] for r in db.execute("SELECT * FROM alembic_version")] == [
            "gateway_changes_0001"]
    assert FeedPosition(tmp_path, LOCAL).load() == 4712
