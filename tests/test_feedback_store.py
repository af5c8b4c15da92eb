"""The feedback store: what a row keeps, that it is append-only, and which reading counts; on
SQLite, then on PostgreSQL."""

from __future__ import annotations

import pytest

from clinassist.serving.imaging.feedback import FeedbackStore, Reading
from store_sql import raw

pytestmark = pytest.mark.usefixtures("database")
OPERATING_POINT = {"population": "adult", "source": "site-calibration",
                   "site_calibration_version": 3, "temperature": 1.4, "threshold": 0.31}


def summary(result_id: str, **extra) -> dict:
    return {"id": result_id, "study_instance_uid": f"1.2.3.{result_id}",
            "sop_instance_uid": f"1.2.3.{result_id}.1", "probability": 0.7, "flag": "urgent",
            "model": {"name": "cxr_pneumonia", "version": "1.1.0"}, **extra}


def test_the_model_and_operating_point_are_kept_whole_and_read_defensively(tmp_path):
    store = FeedbackStore(tmp_path)
    with_point, _ = store.add(summary("a", operating_point={**OPERATING_POINT, "new": 1}),
                              Reading.PNEUMONIA, None, "dr-a")
    older, _ = store.add(summary("b"), Reading.NO_PNEUMONIA, "clear", "dr-a")
    no_model, _ = store.add({"id": "c"}, Reading.NOT_ASSESSABLE, None, "dr-a")
    assert with_point.operating_point == {**OPERATING_POINT, "new": 1}
    assert with_point.model == {"name": "cxr_pneumonia", "version": "1.1.0"}
    assert older.operating_point is None and no_model.model == {} and no_model.flag is None
    assert (with_point.agrees, older.agrees, no_model.agrees) == (True, False, None)


def test_the_newest_reading_of_each_result_counts(tmp_path):
    store = FeedbackStore(tmp_path)
    first, none_before = store.add(summary("a"), Reading.NO_PNEUMONIA, None, "dr-a")
    second, superseded = store.add(summary("a"), Reading.PNEUMONIA, None, "dr-b")
    store.add(summary("b"), Reading.PNEUMONIA, None, "dr-a")
    assert (none_before, superseded) == (None, first.id)
    assert [f.reading for f in store.history("a")] == [Reading.NO_PNEUMONIA, Reading.PNEUMONIA]
    assert [(f.result_id, f.reading) for f in store.current()] == [
        ("a", Reading.PNEUMONIA), ("b", Reading.PNEUMONIA)]
    assert store.current(since="9999-01-01") == []
    assert store.studies_with_feedback() == {"1.2.3.a": Reading.PNEUMONIA,
                                             "1.2.3.b": Reading.PNEUMONIA}


@pytest.mark.parametrize("statement", ["UPDATE feedback SET reading = 'no_pneumonia'",
                                       "DELETE FROM feedback"])
def test_rows_cannot_be_changed_or_deleted(tmp_path, database, statement):
    store = FeedbackStore(tmp_path)
    store.add(summary("a"), Reading.PNEUMONIA, None, "dr-a")
    with raw(store._db, database) as db, pytest.raises(Exception, match="append-only"):
        db.execute(statement)
    assert [f.reading for f in store.history("a")] == [Reading.PNEUMONIA]
