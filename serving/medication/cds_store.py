"""CDS Hooks cards issued and the feedback on them, kept for review and later retraining.

`$CLINASSIST_HOME/cds_feedback.db`; rows hold what the card said (type, severity, ingredients,
KB version) and the outcome, never a patient identifier.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from clinassist.serving.security.database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS cards (uuid TEXT PRIMARY KEY, service TEXT NOT NULL,
    issued_at TEXT NOT NULL, alert TEXT NOT NULL, kb_version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY, service TEXT NOT NULL,
    card TEXT NOT NULL, outcome TEXT NOT NULL, override_reason TEXT, accepted_suggestions TEXT,
    outcome_at TEXT, received_at TEXT NOT NULL);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CdsStore:
    def __init__(self, path: Path) -> None:
        self._db = Database(path, SCHEMA)

    def issued(self, service: str, cards: list[tuple[str, dict]], kb_version: str) -> None:
        """Record each card's uuid with the alert it carried (ingredients, not patients)."""
        with self._db.transaction() as db:
            db.executemany("INSERT INTO cards VALUES (?, ?, ?, ?, ?)", [
                (uuid, service, now(), json.dumps({k: alert[k] for k in (
                    "type", "severity", "ingredients", "evidence")}), kb_version)
                for uuid, alert in cards])

    def known_cards(self, service: str, uuids: list[str]) -> set[str]:
        marks = ",".join("?" * len(uuids))
        rows = self._db.query(f"SELECT uuid FROM cards WHERE service = ? AND uuid IN ({marks})",
                              (service, *uuids)).fetchall()
        return {uuid for (uuid,) in rows}

    def feedback(self, service: str, items: list[dict]) -> None:
        with self._db.transaction() as db:
            db.executemany(
                "INSERT INTO feedback (service, card, outcome, override_reason, "
                "accepted_suggestions, outcome_at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(service, item["card"], item["outcome"],
                  json.dumps(item.get("overrideReason")) if item.get("overrideReason") else None,
                  json.dumps(item.get("acceptedSuggestions")) if item.get("acceptedSuggestions")
                  else None, item.get("outcomeTimestamp"), now()) for item in items])

    def feedback_rows(self) -> list[tuple]:
        """(service, card, outcome, override reason JSON) in arrival order."""
        return [tuple(row) for row in self._db.query(
            "SELECT service, card, outcome, override_reason FROM feedback ORDER BY id")]
