"""The monitoring events on SQLite, then on PostgreSQL: what is added comes back as it was,
oldest first, filtered by time and cut to the newest N; and a monitoring.db written before
migrations is taken over as it is."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from clinassist.serving.imaging.monitoring import ImageStats, MonitoringStore, TriageEvent
from clinassist.serving.storage import DATABASE_URL_ENV
from store_sql import raw

EARLIER_RELEASE = """
CREATE TABLE triage_event (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, result_id TEXT NOT NULL,
    population TEXT NOT NULL, model_version TEXT NOT NULL, qc_passed INTEGER NOT NULL,
    blocking_reasons TEXT NOT NULL, probability REAL, flag TEXT, mean_intensity REAL,
    std_intensity REAL, dark_fraction REAL);
CREATE INDEX triage_event_time ON triage_event (recorded_at);
INSERT INTO triage_event VALUES (7, '2026-11-30T08:00:00+00:00', 'r-old', 'adult', '1.1.0', 1,
                                 '[]', 0.25, 'routine', 0.5, 0.2, 0.1);
"""


def event(minute: int, passed: bool = True) -> TriageEvent:
    return TriageEvent(
        f"2026-12-01T10:{minute:02d}:00.000000+00:00", f"r-{minute}", "adult", "2.0.0", passed,
        () if passed else ("not_chest", "too_dark"), 0.75 if passed else None,
        "urgent" if passed else None,
        ImageStats(0.4375, 0.1875, 0.125) if passed else None)


def test_events_come_back_as_added_oldest_first(tmp_path, database):
    store = MonitoringStore(tmp_path)
    added = [event(1), event(2, passed=False), event(3), event(4)]
    for each in added:
        store.add(each)
    assert MonitoringStore(tmp_path).events() == added
    assert store.events(since="2026-12-01T10:02") == added[1:]
    assert store.events(latest=2) == added[2:]
    assert store.events(since="2026-12-01T10:04", latest=3) == added[3:]
    assert store.events(since="2026-12-02") == []
    with raw(store._db, database) as db:
        (row,) = db.execute("SELECT qc_passed, blocking_reasons FROM triage_event "
                            "WHERE result_id = 'r-2'")
        assert (row["qc_passed"], row["blocking_reasons"]) == (0, '["not_chest", "too_dark"]')


def test_a_monitoring_file_from_before_migrations_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)  # only SQLite homes are that old
    with closing(sqlite3.connect(tmp_path / "monitoring.db")) as db:
        db.executescript(EARLIER_RELEASE)
    store = MonitoringStore(tmp_path)
    store.add(event(1))
    old, new = store.events()
    assert old == TriageEvent("2026-11-30T08:00:00+00:00", "r-old", "adult", "1.1.0", True, (),
                              0.25, "routine", ImageStats(0.5, 0.2, 0.1))
    assert new == event(1)
    with raw(store._db, None) as db:
        assert [r["version_num"] for r in db.execute("SELECT * FROM alembic_version")] == [
            "monitoring_0001"]
        assert [r["id"] for r in db.execute("SELECT id FROM triage_event")] == [7, 8]
