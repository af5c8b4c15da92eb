"""The Kermany chest-radiograph set: manifest, checksums, patient-grouped splits, pixel arrays.

The checksum discipline (manifest against `SHA256SUMS`, every image against its manifest MD5)
is shared with the adult NIH set (`nih_adult_data`)."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold

from clinassist.bundle import file_sha256
from clinassist.config import data_dir
from clinassist.errors import ClinassistError

DATASET_FOLDER = "cxr_kermany224"
MANIFEST = "manifest.csv"


class DataError(ClinassistError):
    """The data directory is missing, incomplete or does not match its checksums."""


@dataclass(frozen=True)
class Record:
    path: str
    split: str
    label: int
    subtype: str
    patient_id: str
    md5: str


def checked_folder(root: Path | None, folder_name: str, card: str) -> Path:
    """`root`, or `$CLINASSIST_DATA/folder_name`; a clear error naming the card if absent."""
    folder = Path(root) if root is not None else data_dir() / folder_name
    if not folder.is_dir():
        raise DataError(
            f"chest-radiograph data not found at {folder}; set CLINASSIST_DATA to the folder "
            f"that holds {folder_name}/ (see {card})"
        )
    return folder


def dataset_root(root: Path | None = None) -> Path:
    return checked_folder(root, DATASET_FOLDER, "datasets/kermany_cxr/README.md")


def expected_manifest_sha256(root: Path) -> str:
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        raise DataError(f"{sums} is missing; cannot verify {MANIFEST}")
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.strip() == MANIFEST:
            return digest
    raise DataError(f"{sums} has no entry for {MANIFEST}")


def checked_manifest_rows(root: Path) -> list[dict[str, str]]:
    """The rows of `root/manifest.csv` after checking the file against `SHA256SUMS`."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{manifest} is missing")
    actual = file_sha256(manifest)
    if actual != expected_manifest_sha256(root):
        raise DataError(f"{manifest} does not match its SHA256SUMS entry (got {actual})")
    with open(manifest, newline="") as handle:
        return list(csv.DictReader(handle))


def read_manifest(root: Path | None = None) -> list[Record]:
    """Read `manifest.csv` after checking it against `SHA256SUMS`."""
    return [Record(row["path"], row["split"], int(row["label_id"]), row["subtype"],
                   row["patient_id"], row["md5"])
            for row in checked_manifest_rows(dataset_root(root))]


def verify_files(records: list, root: Path) -> None:
    """Check every record's file exists and matches its manifest md5; report all failures at once."""
    missing, corrupt = [], []
    for record in records:
        path = root / record.path
        if not path.is_file():
            missing.append(record.path)
        elif hashlib.md5(path.read_bytes()).hexdigest() != record.md5:
            corrupt.append(record.path)
    if missing or corrupt:
        raise DataError(
            f"{len(missing)} image(s) missing, {len(corrupt)} with a wrong checksum under {root}; "
            f"first: {(missing + corrupt)[:3]}"
        )


def verify_images(records: list[Record], root: Path | None = None) -> None:
    verify_files(records, dataset_root(root))


def load_pixels(records: list[Record], root: Path | None = None) -> np.ndarray:
    """Decode the images to a (N, H, W) uint8 array (the JPEGs are stored RGB with R=G=B)."""
    root = dataset_root(root)
    return np.stack([np.asarray(Image.open(root / r.path).convert("L")) for r in records])


def labels(records: list[Record]) -> np.ndarray:
    return np.array([r.label for r in records], dtype=np.int64)


def patient_groups(records: list[Record]) -> np.ndarray:
    """One group per patient, merged with any other patient holding a byte-identical image."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for record in records:
        parent[find("patient:" + record.patient_id)] = find("md5:" + record.md5)
    roots = [find("patient:" + r.patient_id) for r in records]
    ids = {root: index for index, root in enumerate(dict.fromkeys(roots))}
    return np.array([ids[root] for root in roots])


@dataclass(frozen=True)
class Splits:
    train: list[Record]
    val: list[Record]
    test: list[Record]


def make_splits(records: list[Record], val_fraction: float, seed: int) -> Splits:
    """Carve a stratified, patient-grouped validation split from the official train split.

    The official test split is returned untouched and is never used to fit or select anything.
    """
    official_train = [r for r in records if r.split == "train"]
    test = [r for r in records if r.split == "test"]
    folds = StratifiedGroupKFold(n_splits=round(1 / val_fraction), shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(official_train, labels(official_train),
                                          patient_groups(official_train)))
    return Splits([official_train[i] for i in train_idx], [official_train[i] for i in val_idx], test)
