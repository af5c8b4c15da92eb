"""The site secret: 32 random bytes in `home/site.key`, used only to pseudonymise patient IDs."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from clinassist.serving.security.database import private_dir
from clinassist.serving.security.errors import SiteKeyError

KEY_FILE = "site.key"
KEY_BYTES = 32


def load_site_key(home: Path) -> bytes:
    """The site key in `home`, created (mode 0600) on first use."""
    path = home / KEY_FILE
    if not path.exists():
        _create(path)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise SiteKeyError(f"{path} is readable by other users; run `chmod 600 {path}`")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise SiteKeyError(
            f"{path} holds {len(key)} bytes, expected {KEY_BYTES}; restore it from backup "
            "(a new key would change every patient pseudonym)")
    return key


def pseudonymise(patient_id: str, key: bytes) -> str:
    """A stable pseudonym for `patient_id`: "pid-" + the first 16 hex digits of its HMAC-SHA256."""
    if not patient_id:
        raise ValueError("cannot pseudonymise an empty patient ID")
    digest = hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return "pid-" + digest[:16]


def _create(path: Path) -> None:
    """Write a new key atomically: a concurrent first use keeps whichever key landed first."""
    private_dir(path.parent)
    temporary = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(KEY_BYTES))
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
