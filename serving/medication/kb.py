"""Read-only access to the knowledge base written by `kb_build`, built on first use if missing."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from clinassist.config import data_dir, home_dir
from clinassist.serving.medication import kb_build
from clinassist.serving.medication.severity import Severity
from clinassist.serving.security import database

KB_FILE = "kb.sqlite"
REBUILD = "rebuild it with `clinassist kb build` (or restore the home from a backup)"


@dataclass(frozen=True)
class Ingredient:
    id: int
    name: str
    ansm_name: str | None


@dataclass(frozen=True)
class Rule:
    """One knowledge-base interaction rule, in its source's language."""

    id: int
    source: str
    main: str
    plus: str
    severity: Severity
    levels: list[dict]
    mechanism: str | None
    management: str | None
    language: str
    specificity: int


def default_path() -> Path:
    return home_dir() / KB_FILE


class KnowledgeBase:
    """Queries over one KB file; safe to share between threads, each of which reads through a
    read-only connection of its own, so concurrent reviews do not queue on one connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connection()  # a missing or damaged file fails here, by name

    @classmethod
    def open(cls, path: Path | None = None, *, build_if_missing: bool = True) -> KnowledgeBase:
        """The KB at `path` (default `$CLINASSIST_HOME/kb.sqlite`), built from
        `$CLINASSIST_DATA` with the default (ANSM) sources when it does not exist yet."""
        path = path or default_path()
        if not path.exists() and build_if_missing:
            kb_build.build(data_dir(), path)
        return cls(path)

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = database.connect(self.path, read_only=True, remedy=REBUILD)
            self._local.connection = connection
        return connection

    def _rows(self, sql: str, *params: object) -> list[tuple]:
        return self._connection().execute(sql, params).fetchall()

    @cached_property
    def meta(self) -> dict[str, str]:
        return dict(self._rows("SELECT key, value FROM meta"))

    @property
    def version(self) -> str:
        return self.meta["kb_version"]

    @cached_property
    def sources(self) -> list[dict]:
        """The licence manifest of every source the KB was built from."""
        return [json.loads(manifest) for (manifest,) in self._rows("SELECT manifest FROM sources")]

    @cached_property
    def all_names(self) -> list[str]:
        return [name for (name,) in self._rows("SELECT DISTINCT name FROM names")]

    def by_name(self, folded: str) -> list[Ingredient]:
        return self._ingredients("SELECT i.id, i.name, i.ansm_name FROM names n JOIN ingredients "
                                 "i ON i.id = n.ingredient WHERE n.name = ? ORDER BY i.id", folded)

    def by_code(self, system: str, code: str) -> list[Ingredient]:
        return self._ingredients("SELECT i.id, i.name, i.ansm_name FROM codes c JOIN ingredients "
                                 "i ON i.id = c.ingredient WHERE c.system = ? AND c.code = ? "
                                 "ORDER BY i.id", system, code)

    def _ingredients(self, sql: str, *params: object) -> list[Ingredient]:
        return [Ingredient(*row) for row in self._rows(sql, *params)]

    def atc_codes(self, ingredient: int) -> list[str]:
        return [code for (code,) in self._rows(
            "SELECT code FROM codes WHERE ingredient = ? AND system = 'atc' ORDER BY code",
            ingredient)]

    def atc_name(self, code: str) -> str | None:
        rows = self._rows("SELECT name FROM atc_classes WHERE code = ?", code)
        return rows[0][0] if rows else None

    def rules(self, a: int, b: int) -> list[Rule]:
        """Every rule for an ingredient pair, most severe and most specific first."""
        rows = self._rows(
            "SELECT r.id, r.source, r.main, r.plus, r.severity, r.levels, r.mechanism, "
            "r.management, r.language, x.specificity FROM interactions x JOIN rules r "
            "ON r.id = x.rule WHERE x.a = ? AND x.b = ? "
            "ORDER BY r.severity DESC, x.specificity DESC, r.id", min(a, b), max(a, b))
        return [Rule(row[0], row[1], row[2], row[3], Severity(row[4]), levels_json(row[5]),
                     *row[6:]) for row in rows]


def levels_json(stored: str) -> list[dict]:
    """A rule's levels with the severity as its label, as every response names it."""
    return [{**level, "severity": Severity(level["severity"]).label}
            for level in json.loads(stored)]
