"""Raw SQL on a store's tables, as someone with access to the file or the database server
would run it, for tests that tamper with a store behind its back."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from clinassist.serving.storage import Store
from clinassist.serving.storage.ddl import TRIGGERS


@contextmanager
def raw(store: Store, url: str | None) -> Iterator[Any]:
    """A DBAPI connection (autocommit, rows as mappings) where the store's tables resolve:
    its SQLite file, or its schema of the PostgreSQL database at `url`."""
    if store.path is not None:
        with closing(sqlite3.connect(store.path, isolation_level=None)) as db:
            db.row_factory = sqlite3.Row
            yield db
    else:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as db:
            db.execute(f'SET search_path TO "{store.schema.name}"')
            yield db


def drop_append_only(db: Any, table: str) -> None:
    """Drop the triggers that refuse UPDATE and DELETE on `table`."""
    postgresql = not isinstance(db, sqlite3.Connection)
    for name in TRIGGERS["postgresql" if postgresql else "sqlite"]:
        db.execute(f"DROP TRIGGER {name.format(table=table)}" + (f" ON {table}" if postgresql
                                                                 else ""))
