"""The manifest of a backup (`manifest.json`): every file with its SHA-256, size and mode, the
PostgreSQL dump if the stores are there, and the audit trail's row count and head hash at the
time of the copy."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from clinassist.serving.durable import write_and_sync
from clinassist.serving.ops.errors import BackupError

MANIFEST = "manifest.json"
FORMAT = 1
CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the home, POSIX separators
    sha256: str
    size: int
    mode: int  # permission bits, restored as they were (site.key stays 0600)
    database: bool  # copied with SQLite's online backup API

    def relative(self) -> Path:
        """The entry's path, refused if it would point outside the folder it belongs to."""
        path = PurePosixPath(self.path)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise BackupError(f"the manifest names {self.path!r}, which is outside the backup; "
                              "the manifest was altered: use another backup")
        return Path(*path.parts)


@dataclass(frozen=True)
class AuditState:
    """The audit trail as verified in the copy."""

    rows: int
    head_hash: str
    intact: bool
    reason: str | None  # why it is not intact


@dataclass(frozen=True)
class Manifest:
    created: str  # ISO 8601, UTC
    home: str  # the home that was copied
    files: tuple[FileEntry, ...]
    audit: AuditState | None  # None: the home had no audit trail
    format: int = FORMAT
    database_dump: FileEntry | None = None  # the stores in PostgreSQL (pg_dump), if there

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)

    def write(self, folder: Path) -> None:
        text = json.dumps(asdict(self), indent=1) + "\n"
        write_and_sync(folder / MANIFEST, text.encode("utf-8"))

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackupError(f"{folder} is not a clinassist backup: it has no {MANIFEST} "
                              "(take one with `clinassist backup DEST`)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BackupError(f"cannot read {path} ({error}): use another backup") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BackupError(f"{path} is not a format {FORMAT} clinassist manifest: restore it "
                              "with the clinassist version that wrote it")
        try:
            audit = raw["audit"] and AuditState(**raw["audit"])
            dump = raw.get("database_dump") and FileEntry(**raw["database_dump"])
            return cls(raw["created"], raw["home"],
                       tuple(FileEntry(**entry) for entry in raw["files"]), audit,
                       database_dump=dump)
        except (KeyError, TypeError) as error:
            raise BackupError(f"{path} is incomplete ({error}): use another backup") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_hashed(source: Path, target: Path) -> tuple[str, int]:
    """Copy `source` to `target` (fsync'd); the SHA-256 and size of the bytes written."""
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest(), size
