"""Bring a store's tables to the newest alembic revision of its branch.

`migrations/versions` holds one branch per store, labelled with the store's name: its first
revision is the schema the store had before migrations (tables created only if missing, so a
home made by an earlier release is taken over as it is), later ones change it. A SQLite file
holds one branch and its own `alembic_version`; in PostgreSQL each store's schema does.

A process checks each store once. Migrating takes the store's write lock (SQLite) or an
advisory lock (PostgreSQL), so replicas starting together migrate once; a store already at the
newest revision is only read, so opening it never waits for a writer.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, select, text

from clinassist.serving.storage.engine import IMMEDIATE

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger(__name__)
# alembic logs two lines at INFO each time a store is opened; this module says when one migrates
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
_checked: set[tuple[str, str]] = set()
_lock = threading.Lock()


def upgrade(engine: Engine, store: str, sqlite_path: Path | None) -> None:
    """Migrate `store` (its SQLite file at `sqlite_path`, else its PostgreSQL schema)."""
    key = (str(engine.url), store)
    if key in _checked:
        return
    schema = None if sqlite_path is not None else store
    with _lock:
        with engine.connect() as connection:
            current = set(_context(connection, schema).get_current_heads())
        if current != heads(store):
            log.info("migrating store %s from %s to %s", store, sorted(current) or "nothing",
                     sorted(heads(store)))
            with engine.execution_options(**{IMMEDIATE: True}).begin() as connection:
                if schema is not None:
                    _enter_schema(connection, schema)
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes.update(connection=connection, version_table_schema=schema)
                command.upgrade(config, f"{store}@head")
        _checked.add(key)


@cache
def heads(store: str) -> set[str]:
    """The newest revision of `store`'s branch."""
    scripts = ScriptDirectory(str(MIGRATIONS))
    return {revision.revision for revision in scripts.get_revisions(f"{store}@head")
            if revision is not None}


def _context(connection: Connection, schema: str | None) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"version_table_schema": schema})


def _enter_schema(connection: Connection, schema: str) -> None:
    """Hold the schema's migration lock for this transaction, create the schema if missing and
    make it where unqualified names (a migration's own SQL) resolve."""
    digest = hashlib.sha256(f"clinassist:migrate:{schema}".encode()).digest()
    connection.execute(select(func.pg_advisory_xact_lock(
        int.from_bytes(digest[:8], "big", signed=True))))
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
