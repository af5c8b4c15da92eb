"""User accounts with API keys; only the SHA-256 of each key is stored (`home/security.db`)."""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clinassist.serving.security import database
from clinassist.serving.security.errors import InvalidUserNameError, UnknownUserError, UserExistsError
from clinassist.serving.security.principal import Principal
from clinassist.serving.security.roles import Role, parse_role

KEY_PREFIX = "ca_"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    revoked TEXT
);
"""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created: datetime
    revoked: datetime | None


class UserStore:
    """The user table in `home/security.db`."""

    def __init__(self, home: Path) -> None:
        self._db = database.Database(home / database.SECURITY_DB, SCHEMA)

    def add(self, name: str, role: str) -> tuple[User, str]:
        """Create a user; returns it with its API key, which is stored only as a hash."""
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidUserNameError(
                f"invalid user name {name!r}: use 1-64 letters, digits and . _ @ -, "
                "starting with a letter or digit")
        user = User(name, parse_role(role), datetime.now(UTC), None)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._db.transaction() as db:
                db.execute("INSERT INTO users VALUES (?, ?, ?, ?, NULL)",
                           (name, user.role.value, _digest(key), user.created.isoformat()))
        except sqlite3.IntegrityError:
            raise UserExistsError(
                f"user {name!r} already exists; names are never reused, choose another") from None
        return user, key

    def list(self) -> builtins.list[User]:
        return [_user(row) for row in self._db.query("SELECT * FROM users ORDER BY name")]

    def revoke(self, name: str) -> User:
        """Revoke the user's key for good (revoking twice keeps the first time)."""
        with self._db.transaction() as db:
            db.execute("UPDATE users SET revoked = ? WHERE name = ? AND revoked IS NULL",
                       (datetime.now(UTC).isoformat(), name))
            row = db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownUserError(f"no user named {name!r}; `users list` shows the users")
        return _user(row)

    def authenticate_key(self, key: str) -> Principal | None:
        """The active user holding `key`, or None."""
        row = self._db.query(
            "SELECT name, role FROM users WHERE key_sha256 = ? AND revoked IS NULL",
            (_digest(key),)).fetchone()
        return None if row is None else Principal(row["name"], Role(row["role"]), "api-key")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _user(row: sqlite3.Row) -> User:
    revoked = row["revoked"]
    return User(row["name"], Role(row["role"]), datetime.fromisoformat(row["created"]),
                None if revoked is None else datetime.fromisoformat(revoked))
