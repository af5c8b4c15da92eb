"""A site dataset written by `clinassist dataset export`, read for fine-tuning and gating.

The dataset is checked as every training set is (`manifest.csv` against `SHA256SUMS`, each
image against its MD5) and split by patient into a training part and a held-out part. The split
is a fixed function of the patient's pseudonym: a patient is held out when a seeded hash of the
pseudonym falls under `HELD_OUT_FRACTION`. So it never depends on who else is in the export: a
later export of the same site (more readings, the same site key) holds out the same patients,
and a patient the promotion gate judged a model on can never reach a later model's training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clinassist.bundle import file_sha256
from clinassist.training.cxr_data import DataError, checked_manifest_rows, verify_files

HELD_OUT_FRACTION = 0.3
SPLIT_SEED = "clinassist-site-split-1"  # changing it would move patients between the parts
SITE_SHARE = 0.25  # default share of each training epoch given to the site's training images
AGE_BAND_START = {"0-4": 0.0, "5-17": 5.0, "18-39": 18.0, "40-64": 40.0, "65-89": 65.0,
                  "90+": 90.0}


@dataclass(frozen=True)
class SiteRecord:
    """One row of a site manifest (the columns `dataset export` writes that training uses)."""

    path: str
    label: int
    patient_id: str
    age_band: str
    view: str
    md5: str

    @property
    def age_years(self) -> float | None:
        """The youngest age of the band (what picks the operating point), None when unknown."""
        return AGE_BAND_START.get(self.age_band)


@dataclass(frozen=True)
class SiteDataset:
    root: Path
    records: list[SiteRecord]
    manifest_sha256: str

    def display_ready(self, records: list[SiteRecord]) -> list[np.ndarray]:
        """Each image as the service gives it to the model: float32 in [0, 1], native size."""
        return [np.asarray(Image.open(self.root / r.path), dtype=np.float32) / 65535.0
                for r in records]

    def training_pixels(self, records: list[SiteRecord], size: int) -> np.ndarray:
        """(N, size, size) uint8, the range and size of the public training images (the
        augmentations' noise is set in 8-bit units), resized as the exported graph resizes."""
        from clinassist.training.nih_adult_data import resize_like_the_graph

        return np.concatenate([
            resize_like_the_graph(np.round(image * 255).astype(np.uint8)[None], size)
            for image in self.display_ready(records)]) if records else \
            np.empty((0, size, size), np.uint8)


@dataclass(frozen=True)
class SiteSplit:
    dataset: SiteDataset
    train: list[SiteRecord]
    held_out: list[SiteRecord]

    def summary(self) -> dict:
        """What a run's config records of the site data it trained on (no image lists)."""
        return {"path": str(self.dataset.root.resolve()),
                "manifest_sha256": self.dataset.manifest_sha256,
                "split_seed": SPLIT_SEED, "held_out_fraction": HELD_OUT_FRACTION,
                "train_images": len(self.train),
                "train_patients": len({r.patient_id for r in self.train}),
                "held_out_images": len(self.held_out),
                "held_out_patients": len({r.patient_id for r in self.held_out})}


def read_site_dataset(root: Path) -> SiteDataset:
    """The checked dataset at `root`; a `DataError` saying what is wrong otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"site dataset {root} not found; write one with `clinassist dataset "
                        "export --since DATE --instances DIR OUT`")
    rows = checked_manifest_rows(root)
    try:
        records = [SiteRecord(row["path"], int(row["label_id"]), row["patient_id"],
                              row["age_band"], row["view"], row["md5"]) for row in rows]
    except (KeyError, ValueError) as error:
        raise DataError(f"{root}/manifest.csv is not a site dataset manifest ({error!r}); "
                        "export it again with `clinassist dataset export`") from None
    verify_files(records, root)
    return SiteDataset(root, records, file_sha256(root / "manifest.csv"))


def held_out(patient_id: str) -> bool:
    """Whether the patient belongs to the held-out part, whatever else the dataset holds."""
    digest = hashlib.sha256(f"{SPLIT_SEED}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT_FRACTION


def split_by_patient(dataset: SiteDataset) -> SiteSplit:
    return SiteSplit(dataset, [r for r in dataset.records if not held_out(r.patient_id)],
                     [r for r in dataset.records if held_out(r.patient_id)])


def training_part(recorded: dict, size: int, share_of: int, share: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The training patients' images and labels of the site dataset a run's config records
    (`SiteSplit.summary`), for one epoch: repeated whole, then sampled, up to `share` of an
    epoch of `share_of` public items. The dataset must still be the one recorded."""
    dataset = read_site_dataset(Path(recorded["path"]))
    if dataset.manifest_sha256 != recorded["manifest_sha256"]:
        raise DataError(f"{dataset.root} is not the site dataset this run recorded (manifest "
                        f"sha256 {dataset.manifest_sha256[:12]}, recorded "
                        f"{recorded['manifest_sha256'][:12]}); train a new run on it")
    split = split_by_patient(dataset)
    if not split.train:
        raise DataError(f"{dataset.root}: every patient falls in the held-out part; the site "
                        "dataset is too small to fine-tune on (export more readings)")
    pixels = dataset.training_pixels(split.train, size)
    targets = np.array([r.label for r in split.train], dtype=np.int64)
    count = max(len(targets), round(share / (1 - share) * share_of))
    whole, rest = divmod(count, len(targets))
    order = np.concatenate([np.tile(np.arange(len(targets)), whole),
                            rng.choice(len(targets), rest, replace=False)])
    return pixels[order], targets[order]


def recorded_splits(paths: list[Path]) -> list[dict]:
    """What a run's config records of each site dataset it fine-tunes on."""
    return [split_by_patient(read_site_dataset(path)).summary() for path in paths]
