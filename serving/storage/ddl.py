"""DDL the migrations share that SQLAlchemy does not write for both dialects."""

from __future__ import annotations

from sqlalchemy import Connection, text

TRIGGERS = {"sqlite": ("{table}_no_update", "{table}_no_delete"),
            "postgresql": ("{table}_no_change", "{table}_no_truncate")}


def missing_append_only(connection: Connection, table: str, schema: str | None) -> bool:
    """Whether any trigger that keeps `table` (in `schema`, PostgreSQL) append-only is missing
    (dropped by hand)."""
    names = [name.format(table=table) for name in TRIGGERS[connection.dialect.name]]
    if connection.dialect.name == "sqlite":
        query = "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name IN (:a, :b)"
    else:
        query = ("SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(:table) "
                 "AND tgname IN (:a, :b)")
    found = connection.execute(text(query), {"table": f'"{schema}"."{table}"', "a": names[0],
                                             "b": names[1]})
    return found.scalar_one() < len(names)


def append_only(connection: Connection, table: str, message: str) -> None:
    """Refuse UPDATE and DELETE on `table` (and TRUNCATE in PostgreSQL) with `message`;
    triggers that exist are kept. PostgreSQL: `table` resolves on the search path."""
    if connection.dialect.name == "sqlite":
        for verb in ("update", "delete"):
            connection.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb} BEFORE {verb.upper()} ON "
                f"{table} BEGIN SELECT RAISE(ABORT, '{message}'); END")
        return
    connection.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql "
        f"AS $$ BEGIN RAISE EXCEPTION '{message}'; END $$")
    connection.exec_driver_sql(
        f"CREATE OR REPLACE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()")
    connection.exec_driver_sql(
        f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()")
