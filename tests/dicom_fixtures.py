"""Helpers for the DICOM adapter tests: the real CR files, small synthetic radiographs, dciodvfy."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

from clinassist.config import data_dir

DCIODVFY = "/usr/bin/dciodvfy"


def real_cr(name: str = "RG1_UNCR") -> bytes:
    """One of the three transfer syntaxes of the real chest CR (see dicom_cr/PROVENANCE.md)."""
    return (data_dir() / "dicom_cr" / f"{name}.dcm").read_bytes()


def synthetic_cr(pixels: np.ndarray | None = None, bits_stored: int = 12, **attributes) -> Dataset:
    """A small, valid CR chest PA instance; `attributes` (keyword=value) override or add tags."""
    if pixels is None:
        pixels = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) % (1 << bits_stored)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.PatientAge = "003Y"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines of dicom3tools' IOD validator that report an error (warnings are not)."""
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]

