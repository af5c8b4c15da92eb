"""The one storage layer of every store: SQLite files by default, PostgreSQL when
`CLINASSIST_DATABASE_URL` is set (SQLAlchemy Core, psycopg 3, alembic migrations)."""

from clinassist.serving.storage.engine import DATABASE_URL_ENV, database_url
from clinassist.serving.storage.store import Store, StoreSchema

__all__ = ["DATABASE_URL_ENV", "Store", "StoreSchema", "database_url"]
