"""Writing files so that a crash leaves either the old content or the new, never a torn file."""

from __future__ import annotations

import os
from pathlib import Path


def write_synced(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary name, fsync it and its folder."""
    partial = path.with_name(f".{path.name}.partial")
    write_and_sync(partial, data)
    os.rename(partial, path)
    fsync_folder(path.parent)


def write_and_sync(path: Path, data: bytes) -> None:
    """Write `data` to `path` in place and fsync it (for a file inside a staging folder that is
    renamed into place as a whole)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_folder(folder: Path) -> None:
    """Make a rename or unlink inside `folder` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
