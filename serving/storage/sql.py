"""SQL that differs between SQLite and PostgreSQL, written once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction


def insert(connection: Connection, table: Table) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_nothing` and `on_conflict_do_update`."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


class greatest(GenericFunction[Any]):
    """The larger of its arguments: GREATEST in PostgreSQL, the scalar max() in SQLite."""

    inherit_cache = True


class least(GenericFunction[Any]):
    """The smaller of its arguments: LEAST in PostgreSQL, the scalar min() in SQLite."""

    inherit_cache = True


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(least, "sqlite")
def _least_sqlite(element: least, compiler: Any, **kw: Any) -> str:
    return f"min({compiler.process(element.clauses, **kw)})"
