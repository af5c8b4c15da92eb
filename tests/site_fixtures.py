"""A site's studies for the learning-loop tests: real adult radiographs (NIH ChestX-ray14 training
patients, never validation or test patients) written as CR instances, one patient each, and a
fixed site key so that pseudonyms, and so the patient split, are the same on every run."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pydicom

from dicom_fixtures import synthetic_cr
from clinassist.serving.security.site_key import KEY_BYTES, KEY_FILE
from clinassist.training import nih_adult_data


@dataclass(frozen=True)
class SiteStudy:
    dataset: pydicom.Dataset
    label: int  # 1 pneumonia, 0 no finding (the NIH label)


def use_fixed_site_key(home: Path) -> None:
    """A new home whose site key is fixed (its empty audit trail made first, as a first start
    makes it, so the key is not taken for the leftover of a lost trail)."""
    from clinassist.serving.security import AuditTrail

    AuditTrail(home)
    key = home / KEY_FILE
    key.write_bytes(hashlib.sha256(b"clinassist test site").digest()[:KEY_BYTES])
    key.chmod(0o600)


def site_studies(per_class: int) -> list[SiteStudy]:
    """`per_class` pneumonia and `per_class` normal adults, one image per patient, aged 30-79."""
    records = nih_adult_data.make_splits(nih_adult_data.read_manifest()).train
    chosen, patients = [], set()
    for label in (1, 0):
        for record in records:
            if (len([r for r in chosen if r.label == label]) < per_class and record.adult
                    and record.label == label and record.patient_id not in patients):
                chosen.append(record)
                patients.add(record.patient_id)
    pixels = nih_adult_data.load_pixels(chosen)
    return [SiteStudy(synthetic_cr(pixels=image, bits_stored=8, ViewPosition=record.view,
                                   PatientAge=f"{30 + index % 50:03d}Y",
                                   PatientID=f"SITE-{index:05d}",
                                   PatientName=f"Sitepatient^Number{index}",
                                   PatientBirthDate="19700101", PatientSex="FM"[index % 2],
                                   Manufacturer="Test", ManufacturerModelName="CR-1"),
                      record.label)
            for index, (record, image) in enumerate(zip(chosen, pixels))]


def write_instances(studies: list[SiteStudy], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, study in enumerate(studies):
        study.dataset.save_as(folder / f"{index}.dcm", enforce_file_format=True)
    return folder


def export_with_feedback(home: Path, studies: list[SiteStudy], output: Path) -> Path:
    """Record each study's label as a radiologist's reading (no service: the store directly)
    and export the site dataset, as `clinassist dataset export` does."""
    from clinassist.serving.deid import Deidentifier
    from clinassist.serving.imaging.dataset_export import export_dataset
    from clinassist.serving.imaging.feedback import FeedbackStore, Reading
    from clinassist.serving.security import load_site_key

    instances = write_instances(studies, home / "pacs-export")
    store = FeedbackStore(home)
    for index, study in enumerate(studies):
        ds = study.dataset
        store.add({"id": f"{index:032x}", "study_instance_uid": str(ds.StudyInstanceUID),
                   "sop_instance_uid": str(ds.SOPInstanceUID),
                   "model": {"name": "cxr_pneumonia", "version": "test"}},
                  Reading.PNEUMONIA if study.label else Reading.NO_PNEUMONIA, None, "dr-test")
    export_dataset(home, date.today(), output, instances, Deidentifier(load_site_key(home)))
    return output
