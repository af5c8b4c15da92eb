"""CDS Hooks cards issued and the feedback on them, kept for review and later retraining.

`$CLINASSIST_HOME/cds_feedback.db`, or the schema `cds_feedback` of PostgreSQL; rows hold what
the card said (type, severity, ingredients, KB version) and the outcome, never a patient
identifier.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, Table, Text, select

from clinassist.serving.storage import Store, StoreSchema

TABLES = MetaData()
cards = Table("cards", TABLES, *(Column(name, Text, primary_key=name == "uuid") for name in (
    "uuid", "service", "issued_at", "alert", "kb_version")))
feedback = Table("feedback", TABLES, Column("id", Integer, primary_key=True),
                 *(Column(name, Text) for name in (
                     "service", "card", "outcome", "override_reason", "accepted_suggestions",
                     "outcome_at", "received_at")))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CdsStore:
    def __init__(self, path: Path) -> None:
        """`path`: the SQLite file (its folder is the home; with PostgreSQL, its name is
        unused)."""
        self._db = Store(path.parent, StoreSchema("cds_feedback", path.name))

    def issued(self, service: str, cards_issued: list[tuple[str, dict]], kb_version: str) -> None:
        """Record each card's uuid with the alert it carried (ingredients, not patients)."""
        if not cards_issued:
            return
        with self._db.write() as db:
            db.execute(cards.insert(), [
                {"uuid": uuid, "service": service, "issued_at": now(), "kb_version": kb_version,
                 "alert": json.dumps({k: alert[k] for k in (
                     "type", "severity", "ingredients", "evidence")})}
                for uuid, alert in cards_issued])

    def known_cards(self, service: str, uuids: list[str]) -> set[str]:
        with self._db.read() as db:
            return set(db.scalars(select(cards.c.uuid).where(
                cards.c.service == service, cards.c.uuid.in_(uuids))))

    def feedback(self, service: str, items: list[dict]) -> None:
        if not items:
            return
        with self._db.write() as db:
            db.execute(feedback.insert(), [
                {"service": service, "card": item["card"], "outcome": item["outcome"],
                 "override_reason": json.dumps(item.get("overrideReason"))
                 if item.get("overrideReason") else None,
                 "accepted_suggestions": json.dumps(item.get("acceptedSuggestions"))
                 if item.get("acceptedSuggestions") else None,
                 "outcome_at": item.get("outcomeTimestamp"), "received_at": now()}
                for item in items])

    def feedback_rows(self) -> list[tuple]:
        """(service, card, outcome, override reason JSON) in arrival order."""
        with self._db.read() as db:
            return [tuple(row) for row in db.execute(select(
                feedback.c.service, feedback.c.card, feedback.c.outcome,
                feedback.c.override_reason).order_by(feedback.c.id))]
