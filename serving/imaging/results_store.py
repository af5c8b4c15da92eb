"""Durable storage of triage results: the JSON summary, the SR and the Secondary Capture.

A result is written to a temporary folder, fsync'd, then renamed into place, so it is either
on disk or absent. It is complete at once (`save`), or accepted first and completed later
(`accept`, then `complete`): an accepted result holds its summary, the source instance and the
`TriageResult` its objects are built from (`pending.json`), so a process that dies before
completing it leaves all another process needs to complete it (`claim`). The process
completing a result holds an exclusive `flock` on its `pending.json` until done.

A result is never changed once complete and is found by its random id alone, so replicas need
no index to share results: only one folder that all of them mount (`CLINASSIST_RESULTS_DIR`; a
POSIX filesystem with atomic rename and `flock`, e.g. NFS or CephFS; not an object store
mounted through FUSE).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread

from clinassist.serving.dicom.results import TriageResult
from clinassist.serving.durable import fsync_folder, write_and_sync, write_synced

KINDS = {"sr": "sr.dcm", "sc": "sc.dcm", "json": "summary.json"}
SOURCE, PENDING = "source.dcm", "pending.json"  # present until the SR and SC are written
RESULTS_DIR_ENV = "CLINASSIST_RESULTS_DIR"
ABANDONED_AFTER_S = 3600.0  # a staging folder this old was left by a process that died


def results_dir(home: Path) -> Path:
    """$CLINASSIST_RESULTS_DIR, else `home/results`."""
    configured = os.environ.get(RESULTS_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else home / "results"


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class Staged:
    """A result's folder while it is written (`.ID.partial`, renamed to ID when complete)."""

    result_id: str
    results: Path

    @property
    def folder(self) -> Path:
        return self.results / f".{self.result_id}.partial"

    def discard(self) -> None:
        """Remove the folder of a result that will not be (its instance was refused)."""
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Claim:
    """The right to complete an accepted result: its lock, held until `release`."""

    result_id: str
    result: TriageResult
    _lock: int

    def release(self) -> None:
        os.close(self._lock)


class ResultStore:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, summary: dict, objects: dict[str, bytes]) -> str:
        """Store a complete result; its id."""
        staged = self.stage()
        self._publish(staged, summary, {KINDS[kind]: data for kind, data in objects.items()})
        return staged.result_id

    def sweep_staging(self, older_than_s: float = ABANDONED_AFTER_S) -> int:
        """Remove staging folders not touched for `older_than_s`: left by a process that died
        while writing them (a replica sharing the folder finishes its own in seconds). How
        many."""
        cutoff = time.time() - older_than_s
        abandoned = [path for path in self.folder.glob(".*.partial")
                     if path.is_dir() and path.stat().st_mtime < cutoff]
        for path in abandoned:
            shutil.rmtree(path, ignore_errors=True)
        return len(abandoned)

    def stage(self, source: bytes | None = None) -> "Staged":
        """The folder of a result to come, not yet visible under its id, holding `source` (the
        instance that `accept` builds objects from) written and synced, so that this can run
        while the instance is being scored."""
        staged = Staged(uuid.uuid4().hex, self.folder)
        staged.folder.mkdir()
        if source is not None:
            write_and_sync(staged.folder / SOURCE, source)
        return staged

    def accept(self, summary: dict, staged: "Staged", result: TriageResult) -> Claim:
        """Store the summary of a result whose objects are built later from the source in
        `staged` (see `stage`) and `result`; the caller holds the returned claim until
        `complete`."""
        record = json.dumps(result.as_record()).encode()
        lock = self._publish(staged, summary, {PENDING: record}, locked=PENDING)
        return Claim(staged.result_id, result, lock)

    def _publish(self, staged: "Staged", summary: dict, files: dict[str, bytes],
                 locked: str | None = None) -> int:
        """Complete the staged folder and make it the result; with `locked`, that file's lock,
        taken before the result is visible under its id (else -1)."""
        for name, data in files.items():
            write_and_sync(staged.folder / name, data)
        write_and_sync(staged.folder / KINDS["json"],
                       json.dumps({**summary, "id": staged.result_id}).encode())
        lock = -1
        if locked is not None:
            lock = os.open(staged.folder / locked, os.O_RDONLY)
            fcntl.flock(lock, fcntl.LOCK_EX)
        os.rename(staged.folder, self.folder / staged.result_id)
        fsync_folder(self.folder)
        return lock

    def complete(self, claim: Claim, objects: dict[str, bytes]) -> None:
        """Write the SR and SC of an accepted result, then drop its source: complete."""
        folder = self.folder / claim.result_id
        for kind, data in objects.items():
            write_synced(folder / KINDS[kind], data)
        self._drop_pending(folder)

    @staticmethod
    def _drop_pending(folder: Path) -> None:
        (folder / SOURCE).unlink(missing_ok=True)  # gone already if a crash cut this short
        (folder / PENDING).unlink()  # last: the mark of a result still to complete
        fsync_folder(folder)

    def is_pending(self, result_id: str) -> bool:
        return result_id.isalnum() and (self.folder / result_id / PENDING).is_file()

    def pending(self) -> list[str]:
        """Ids of the accepted results not yet complete."""
        return sorted(path.parent.name for path in self.folder.glob(f"*/{PENDING}")
                      if path.parent.name.isalnum())

    def claim(self, result_id: str) -> Claim | None:
        """The claim on an accepted result that no live process holds (its process died), or
        None: complete already, or being completed."""
        try:
            lock = os.open(self.folder / result_id / PENDING, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(lock).st_nlink == 0:  # completed between the open and the lock
                raise BlockingIOError
            folder = self.folder / result_id
            if all((folder / KINDS[kind]).is_file() for kind in ("sr", "sc")):
                self._drop_pending(folder)  # its process died between the objects and the end
                raise BlockingIOError
            with os.fdopen(os.dup(lock), "rb") as record:
                result = TriageResult.from_record(json.load(record))
        except BlockingIOError:
            os.close(lock)
            return None
        except BaseException:
            os.close(lock)
            raise
        return Claim(result_id, result, lock)

    def source_path(self, result_id: str) -> Path:
        """Where an accepted result keeps its instance until complete."""
        return self.folder / result_id / SOURCE

    def patient_id(self, result_id: str) -> str | None:
        """The Patient ID of the instance a result is about: from its instance while pending,
        else from its SR (written before the instance goes)."""
        if not result_id.isalnum():
            return None
        for path in (self.source_path(result_id), self.folder / result_id / KINDS["sr"]):
            try:
                return str(dcmread(path, stop_before_pixels=True).get("PatientID") or "") or None
            except FileNotFoundError:
                continue
        return None

    def read(self, result_id: str, kind: str) -> bytes | None:
        if kind not in KINDS or not result_id.isalnum():
            return None
        path = self.folder / result_id / KINDS[kind]
        return path.read_bytes() if path.is_file() else None
