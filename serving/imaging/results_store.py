"""Durable storage of triage results: the JSON summary, the SR and the Secondary Capture.

Each result is written to a temporary folder, fsync'd, then renamed into place, so a result
is either complete on disk or absent. A result is never changed once written and is found by
its random id alone, so replicas need no index to share results: only one folder that all of
them mount (`CLINASSIST_RESULTS_DIR`; a POSIX filesystem with atomic rename, e.g. NFS or
CephFS; not an object store mounted through FUSE).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from pydicom import Dataset

KINDS = {"sr": "sr.dcm", "sc": "sc.dcm", "json": "summary.json"}
RESULTS_DIR_ENV = "CLINASSIST_RESULTS_DIR"


def results_dir(home: Path) -> Path:
    """$CLINASSIST_RESULTS_DIR, else `home/results`."""
    configured = os.environ.get(RESULTS_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else home / "results"


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def dicom_bytes(ds: Dataset) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class ResultStore:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, summary: dict, objects: dict[str, bytes]) -> str:
        result_id = uuid.uuid4().hex
        staging = self.folder / f".{result_id}.partial"
        staging.mkdir()
        for kind, data in objects.items():
            _write_synced(staging / KINDS[kind], data)
        _write_synced(staging / KINDS["json"], json.dumps({**summary, "id": result_id}).encode())
        os.rename(staging, self.folder / result_id)
        return result_id

    def read(self, result_id: str, kind: str) -> bytes | None:
        if kind not in KINDS or not result_id.isalnum():
            return None
        path = self.folder / result_id / KINDS[kind]
        return path.read_bytes() if path.is_file() else None
