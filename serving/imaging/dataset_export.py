"""`clinassist dataset export`: the studies radiologists gave feedback on, de-identified, as a
training set in the layout the training loaders read (`training/cxr_data.py`:
`checked_manifest_rows`, `verify_files`).

    OUT/images/<name>.png   16-bit greyscale, display-ready (modality and VOI LUT applied,
                            MONOCHROME2), exactly what the triage model is given
    OUT/dicom/<name>.dcm    the de-identified instance (PS3.15 basic profile, modified dates,
                            clean descriptors)
    OUT/manifest.csv        path,label,label_id,patient_id,age_band,sex,view,equipment,
                            feedback_time,md5
    OUT/SHA256SUMS          manifest.csv and DATA_CARD.md
    OUT/DATA_CARD.md        what is in it, how it was made, what was left out
    OUT/deid_report.csv     every attribute's de-identification action, per instance

`<name>` is the patient's keyed pseudonym and 8 hex digits of the instance's new UID. The label
is the newest reading of each result; `not_assessable` readings are left out and counted.
Age band and sex come from the source header, coarsened; `feedback_time` is shifted by the
patient's date shift, like the dates inside the DICOM. The source instances are read from a
folder (a PACS export), matched by SOP Instance UID: the service keeps only its results.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError

from clinassist.errors import ClinassistError
from clinassist.serving.deid import DeidError, Deidentifier
from clinassist.serving.deid.files import REPORT_COLUMNS, REPORT_FILE, write_instance
from clinassist.serving.dicom import DicomRejection, patient_age_years, radiograph_pixels
from clinassist.serving.imaging.feedback import Feedback, FeedbackStore, Reading

MANIFEST, SUMS, CARD = "manifest.csv", "SHA256SUMS", "DATA_CARD.md"
COLUMNS = ("path", "label", "label_id", "patient_id", "age_band", "sex", "view", "equipment",
           "feedback_time", "md5")
LABEL_IDS = {Reading.NO_PNEUMONIA: 0, Reading.PNEUMONIA: 1}
AGE_BANDS = ((5, "0-4"), (18, "5-17"), (40, "18-39"), (65, "40-64"), (90, "65-89"))
OLDEST_BAND = "90+"  # HIPAA Safe Harbor aggregates ages over 89
SEXES = ("M", "F", "O")


class ExportError(ClinassistError):
    """The export cannot start (its output exists, its sources are missing)."""


@dataclass
class ExportSummary:
    """What an export wrote and what it left out, by reason (counts only, no identifiers)."""

    rows: list[dict] = field(default_factory=list)
    left_out: Counter = field(default_factory=Counter)
    deid_actions: Counter = field(default_factory=Counter)


def age_band(ds: pydicom.Dataset) -> str:
    years = patient_age_years(ds)
    if years is None:
        return "unknown"
    return next((band for limit, band in AGE_BANDS if years < limit), OLDEST_BAND)


def sex(ds: pydicom.Dataset) -> str:
    value = str(ds.get("PatientSex") or "").strip().upper()
    return value if value in SEXES else "unknown"


def equipment(ds: pydicom.Dataset) -> str:
    return " ".join(str(ds.get(k) or "").strip() for k in ("Manufacturer",
                                                           "ManufacturerModelName")).strip()


def png16(pixels: np.ndarray) -> bytes:
    """[0, 1] float pixels as a 16-bit greyscale PNG, with no metadata chunks."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(pixels, 0, 1) * 65535).astype(np.uint16)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def index_instances(folder: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, for every DICOM file below `folder`."""
    if not folder.is_dir():
        raise ExportError(f"{folder} is not a folder; give --instances the folder holding the "
                          "original instances (e.g. a PACS export of the studies)")
    index = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True,
                                     specific_tags=["SOPInstanceUID"])
        except (InvalidDicomError, OSError):
            continue
        if uid := header.get("SOPInstanceUID"):
            index.setdefault(str(uid), path)
    return index


def shifted_time(received_at: str, days: int) -> str:
    return (datetime.fromisoformat(received_at) + timedelta(days=days)).isoformat(
        timespec="seconds")


def export_dataset(home: Path, since: date, output: Path, instances: Path,
                   deidentifier: Deidentifier) -> ExportSummary:
    """Write the dataset into `output` (which must not exist yet); see the module docstring."""
    if output.exists():
        raise ExportError(f"{output} already exists; export into a new folder")
    readings = FeedbackStore(home).current(since=since.isoformat())
    sources = index_instances(instances)
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    summary = ExportSummary()
    with open(staging / REPORT_FILE, "w", newline="") as handle:
        report = csv.writer(handle)
        report.writerow(REPORT_COLUMNS)
        for feedback in readings:
            _export_one(feedback, sources, staging, deidentifier, summary, report)
    if not summary.rows:
        shutil.rmtree(staging)
        left_out = ", ".join(f"{reason}: {n}" for reason, n in sorted(summary.left_out.items()))
        raise ExportError(f"no reading since {since.isoformat()} could be exported "
                          f"({left_out or 'there are none'}); give an earlier --since")
    summary.rows.sort(key=lambda row: row["path"])
    with open(staging / MANIFEST, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(summary.rows)
    (staging / CARD).write_text(data_card(summary, since, readings))
    (staging / SUMS).write_text("".join(f"{_sha256(staging / name)}  {name}\n"
                                        for name in (MANIFEST, CARD)))
    os.rename(staging, output)
    return summary


def _export_one(feedback: Feedback, sources: dict[str, Path], staging: Path,
                deidentifier: Deidentifier, summary: ExportSummary, report) -> None:
    if feedback.reading not in LABEL_IDS:
        summary.left_out["reading not_assessable"] += 1
        return
    path = sources.get(feedback.sop_instance_uid)
    if path is None:
        summary.left_out["source instance not found"] += 1
        return
    source = pydicom.dcmread(path)
    try:
        result = deidentifier.deidentify(source)
        pixels = radiograph_pixels(result.dataset)
    except DeidError:
        summary.left_out["refused by de-identification"] += 1
        return
    except DicomRejection:
        summary.left_out["pixels unusable"] += 1
        return
    uid_digest = hashlib.sha256(str(result.dataset.SOPInstanceUID).encode()).hexdigest()[:8]
    name = f"{result.pseudonym}-{uid_digest}"
    write_instance(result, staging / "dicom" / f"{name}.dcm")
    image = png16(pixels)
    (staging / "images" / f"{name}.png").write_bytes(image)
    for action in result.actions:
        report.writerow((f"{name}.dcm", action.path, action.keyword, action.vr, action.table,
                         action.action))
    summary.deid_actions.update(action.action for action in result.actions)
    summary.rows.append({
        "path": f"images/{name}.png", "label": feedback.reading.value,
        "label_id": LABEL_IDS[feedback.reading], "patient_id": result.pseudonym,
        "age_band": age_band(source), "sex": sex(source),
        "view": str(source.get("ViewPosition") or "").strip().upper() or "unknown",
        "equipment": equipment(source),
        "feedback_time": shifted_time(feedback.received_at,
                                      deidentifier.date_shift_days(str(source.PatientID))),
        "md5": hashlib.md5(image).hexdigest()})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _table(counter: Counter) -> str:
    return "\n".join(f"| {key} | {count} |" for key, count in sorted(counter.items())) or \
        "| none | 0 |"


def data_card(summary: ExportSummary, since: date, readings: list[Feedback]) -> str:
    """The dataset's card: counts and method only, never an identifier."""
    rows = summary.rows
    models = Counter(f"{f.model.get('name', '?')} {f.model.get('version', '?')}"
                     for f in readings if f.reading in LABEL_IDS)
    sections = [
        ("label", Counter(row["label"] for row in rows)),
        ("age band", Counter(row["age_band"] for row in rows)),
        ("sex", Counter(row["sex"] for row in rows)),
        ("view", Counter(row["view"] for row in rows)),
        ("equipment", Counter(row["equipment"] for row in rows)),
        ("model that triaged them", models),
        ("left out", summary.left_out),
        ("de-identification actions (attributes)", summary.deid_actions),
    ]
    body = "\n\n".join(f"| {title} | images |\n|---|---|\n{_table(counter)}"
                       for title, counter in sections)
    return f"""# Site chest-radiograph dataset (de-identified)

Exported {date.today().isoformat()} by `clinassist dataset export` from the radiologists'
readings received since {since.isoformat()}: {len(rows)} images of
{len({row['patient_id'] for row in rows})} patients. The label is the newest reading of each
triage result (`pneumonia` 1, `no_pneumonia` 0); `not_assessable` readings are left out.

**De-identification.** DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile
with the Retain Longitudinal Temporal Information with Modified Dates and Clean Descriptors
options (DCM 113100, 113107, 113105). Patient IDs are keyed pseudonyms (HMAC-SHA-256 with the
site key), UIDs are remapped with the same key, dates (and `feedback_time`) are shifted by a
per-patient number of days. Age is given in bands (90+ aggregated) and sex as M/F/O. Nothing
here can be linked back to a patient without the site key: keep the key at the site.

**Layout.** `images/*.png` are 16-bit greyscale display-ready pixels (modality and VOI LUT
applied, MONOCHROME2); `dicom/*.dcm` the de-identified instances; `manifest.csv` lists
{", ".join(COLUMNS)}; `SHA256SUMS` checks the manifest and this card, the manifest's md5 each
image; `deid_report.csv` gives every attribute's action.

**Use.** Site data for improving the site's own model; do not try to re-identify anyone.

{body}
"""
