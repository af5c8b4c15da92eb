"""Alembic's environment: runs on the connection (and in the transaction) that
`clinassist.serving.storage.migrate.upgrade` opened and locked."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection,
                  version_table_schema=context.config.attributes["version_table_schema"])
with context.begin_transaction():
    context.run_migrations()
