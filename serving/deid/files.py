"""De-identify DICOM files into a folder, with a report of every attribute's action.

Output files are named by their new SOP Instance UID, never by the source's file name (which
may carry a name or an ID). `deid_report.csv` lists, per instance and per attribute present, its
Table E.1-1 entry and the action taken.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from clinassist.serving.deid.deidentify import Deidentified, Deidentifier
from clinassist.serving.deid.errors import DeidError

REPORT_FILE = "deid_report.csv"
REPORT_COLUMNS = ("instance", "path", "keyword", "vr", "table", "action")


@dataclass
class DeidRun:
    """What a run wrote, what it refused (source path and reason) and the files that are not
    DICOM at all (skipped)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def dicom_files(source: Path) -> Iterator[Path]:
    """`source` itself, or every file below it in name order."""
    if source.is_file():
        yield source
        return
    if not source.is_dir():
        raise DeidError(f"{source} is neither a DICOM file nor a folder of them")
    yield from sorted(path for path in source.rglob("*") if path.is_file())


def write_instance(result: Deidentified, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    result.dataset.save_as(staging, enforce_file_format=True)
    os.replace(staging, path)


def deidentify_files(sources: Iterable[Path], output: Path, deidentifier: Deidentifier) -> DeidRun:
    """De-identify each source into `output`, and write the report beside them."""
    run = DeidRun()
    output.mkdir(parents=True, exist_ok=True)
    with open(output / REPORT_FILE, "w", newline="") as handle:
        report = csv.writer(handle)
        report.writerow(REPORT_COLUMNS)
        for source in sources:
            try:
                result = deidentifier.deidentify(pydicom.dcmread(source))
            except InvalidDicomError:
                run.skipped.append(source)
                continue
            except DeidError as refusal:
                run.refused.append((source, str(refusal)))
                continue
            target = output / f"{result.dataset.SOPInstanceUID}.dcm"
            write_instance(result, target)
            run.written.append(target)
            for action in result.actions:
                report.writerow((target.name, action.path, action.keyword, action.vr,
                                 action.table, action.action))
            run.counts.update(action.action for action in result.actions)
    return run
