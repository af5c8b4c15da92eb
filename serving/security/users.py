"""User accounts with API keys; only the SHA-256 of each key is stored (the security store)."""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Column, MetaData, Row, Table, Text, select, update
from sqlalchemy.exc import IntegrityError

from clinassist.serving.security.errors import InvalidUserNameError, UnknownUserError, UserExistsError
from clinassist.serving.security.principal import Principal
from clinassist.serving.security.roles import Role, parse_role
from clinassist.serving.storage import Store, StoreSchema

KEY_PREFIX = "ca_"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

# Users, trusted JWT issuers (jwt.py) and the JWT IDs seen: `home/security.db`, or the schema
# `security` of the PostgreSQL database (migrations: serving/storage/migrations/versions/).
SECURITY = StoreSchema("security", "security.db")
users = Table("users", MetaData(),
              Column("name", Text, primary_key=True), Column("role", Text),
              Column("key_sha256", Text), Column("created", Text), Column("revoked", Text))


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created: datetime
    revoked: datetime | None


class UserStore:
    """The user table of the security store."""

    def __init__(self, home: Path) -> None:
        self._db = Store(home, SECURITY)

    def add(self, name: str, role: str) -> tuple[User, str]:
        """Create a user; returns it with its API key, which is stored only as a hash."""
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidUserNameError(
                f"invalid user name {name!r}: use 1-64 letters, digits and . _ @ -, "
                "starting with a letter or digit")
        user = User(name, parse_role(role), datetime.now(UTC), None)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._db.write() as db:
                db.execute(users.insert().values(
                    name=name, role=user.role.value, key_sha256=_digest(key),
                    created=user.created.isoformat()))
        except IntegrityError:
            raise UserExistsError(
                f"user {name!r} already exists; names are never reused, choose another") from None
        return user, key

    def list(self) -> builtins.list[User]:
        with self._db.read() as db:
            return [_user(row) for row in db.execute(select(users).order_by(users.c.name))]

    def revoke(self, name: str) -> User:
        """Revoke the user's key for good (revoking twice keeps the first time)."""
        with self._db.write() as db:
            db.execute(update(users).where(users.c.name == name, users.c.revoked.is_(None))
                       .values(revoked=datetime.now(UTC).isoformat()))
            row = db.execute(select(users).where(users.c.name == name)).first()
        if row is None:
            raise UnknownUserError(f"no user named {name!r}; `users list` shows the users")
        return _user(row)

    def authenticate_key(self, key: str) -> Principal | None:
        """The active user holding `key`, or None."""
        with self._db.read() as db:
            row = db.execute(select(users.c.name, users.c.role).where(
                users.c.key_sha256 == _digest(key), users.c.revoked.is_(None))).first()
        return None if row is None else Principal(row.name, Role(row.role), "api-key")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _user(row: Row) -> User:
    return User(row.name, Role(row.role), datetime.fromisoformat(row.created),
                None if row.revoked is None else datetime.fromisoformat(row.revoked))
