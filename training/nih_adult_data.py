"""The adult NIH ChestX-ray14 selection (`cxr_nih_adult`): manifest, checksums, a fixed
patient-grouped split, pixel arrays.

There is no official split. The project's split is fixed (its seed is a constant of this module,
not of a training config), grouped by patient and stratified by label and view, so the adult
test patients are the same for every run and never reach training, selection, calibration or
thresholds. See `datasets/nih_adult_cxr/README.md`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold

from clinassist.training.cxr_data import checked_folder, checked_manifest_rows, verify_files

DATASET_FOLDER = "cxr_nih_adult"
CARD = "datasets/nih_adult_cxr/README.md"
SOURCE = ("NIH ChestX-ray14 (Wang et al., CVPR 2017; NIH Clinical Center), as selected in "
          "GitHub muhammedtalo/COVID-19 @ ee3e2cf, labels from NIH Data_Entry_2017_v2020.csv")
LICENCE = "NIH: no restrictions on use; cite Wang et al. CVPR 2017 and acknowledge the NIH Clinical Center"
SPLIT_SEED = 20261201
TEST_FOLDS = 4        # 1 patient group in 4 is held out for test
VALIDATION_FOLDS = 4  # then 1 in 4 of the rest for validation (about 19 % of the images)
ADULT_AGE = 18
VIEWS = ("AP", "PA")
# Every normal of this selection comes from NIH patient IDs 1,280-3,970 (IDs follow acquisition
# order); pneumonia images from across the range. The "ID-matched" subset keeps that range only.
ID_MATCHED_RANGE = (1280, 3970)


@dataclass(frozen=True)
class Record:
    path: str
    label: int
    patient_id: str
    follow_up: int
    age: int
    sex: str
    view: str
    findings: str
    md5: str

    @property
    def adult(self) -> bool:
        return self.age >= ADULT_AGE

    @property
    def id_matched(self) -> bool:
        low, high = ID_MATCHED_RANGE
        return low <= int(self.patient_id) <= high


def dataset_root(root: Path | None = None) -> Path:
    return checked_folder(root, DATASET_FOLDER, CARD)


def read_manifest(root: Path | None = None) -> list[Record]:
    """The 991 rows of `manifest.csv`, after checking it against `SHA256SUMS`."""
    return [Record(row["path"], int(row["label_id"]), row["patient_id"], int(row["follow_up"]),
                   int(float(row["age"])), row["sex"], row["view"], row["finding_labels"],
                   row["md5"])
            for row in checked_manifest_rows(dataset_root(root))]


def verify_images(records: list[Record], root: Path | None = None) -> None:
    verify_files(records, dataset_root(root))


def labels(records: list[Record]) -> np.ndarray:
    return np.array([r.label for r in records], dtype=np.int64)


def views(records: list[Record]) -> np.ndarray:
    return np.array([r.view for r in records])


def strata(records: list[Record]) -> np.ndarray:
    """Label x view: 0..3."""
    return np.array([2 * r.label + VIEWS.index(r.view) for r in records])


@dataclass(frozen=True)
class Splits:
    train: list[Record]
    val: list[Record]
    test: list[Record]


def _hold_out(records: list[Record], folds: int) -> tuple[list[Record], list[Record]]:
    groups = np.array([r.patient_id for r in records])
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=SPLIT_SEED)
    keep, held = next(splitter.split(records, strata(records), groups))
    return [records[i] for i in keep], [records[i] for i in held]


def make_splits(records: list[Record]) -> Splits:
    """The fixed train / validation / test split: no patient in two parts."""
    rest, test = _hold_out(records, TEST_FOLDS)
    train, val = _hold_out(rest, VALIDATION_FOLDS)
    return Splits(train, val, test)


def load_pixels(records: list[Record], size: int | None = None,
                root: Path | None = None) -> np.ndarray:
    """(N, H, W) uint8. With `size`, each image is resized as the exported graph resizes
    (bilinear, antialiased), so a network trained on them sees what it sees when served."""
    root = dataset_root(root)
    images = np.stack([np.asarray(Image.open(root / r.path).convert("L")) for r in records])
    if size is None or images.shape[-1] == size:
        return images
    return resize_like_the_graph(images, size)


def resize_like_the_graph(images: np.ndarray, size: int, batch: int = 64) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    out = np.empty((len(images), size, size), dtype=np.uint8)
    for start in range(0, len(images), batch):
        chunk = torch.from_numpy(images[start:start + batch]).float().unsqueeze(1)
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                                antialias=True)
        out[start:start + batch] = resized.round().clamp(0, 255).byte().squeeze(1).numpy()
    return out
