"""The CDS feedback store on SQLite, then on PostgreSQL: cards issued are known by service,
feedback comes back in arrival order, and no patient identifier is stored."""

from __future__ import annotations

import json

import pytest

from clinassist.serving.medication.cds_store import CdsStore
from store_sql import raw

ALERT = {"type": "interaction", "severity": "major", "ingredients": ["warfarin", "aspirin"],
         "evidence": "label", "patient": "PID-SECRET"}


@pytest.fixture
def store(tmp_path, database):
    return CdsStore(tmp_path / "cds_feedback.db")


def test_cards_are_known_only_to_the_service_that_issued_them(store):
    store.issued("ddi", [("card-1", ALERT), ("card-2", ALERT)], "kb-7")
    store.issued("other", [], "kb-7")  # nothing to record
    assert store.known_cards("ddi", ["card-1", "card-2", "card-3"]) == {"card-1", "card-2"}
    assert store.known_cards("other", ["card-1"]) == set()


def test_feedback_comes_back_in_arrival_order_without_patient_data(store, database):
    store.issued("ddi", [("card-1", ALERT)], "kb-7")
    store.feedback("ddi", [
        {"card": "card-1", "outcome": "overridden", "overrideReason": {"code": "benefit"},
         "outcomeTimestamp": "2026-12-01T10:00:00Z"},
        {"card": "card-1", "outcome": "accepted", "acceptedSuggestions": [{"id": "s1"}]}])
    assert store.feedback_rows() == [
        ("ddi", "card-1", "overridden", json.dumps({"code": "benefit"})),
        ("ddi", "card-1", "accepted", None)]
    with raw(store._db, database) as db:
        (alert,) = [row["alert"] for row in db.execute("SELECT alert FROM cards")]
    assert json.loads(alert) == {k: ALERT[k] for k in ("type", "severity", "ingredients",
                                                       "evidence")}
