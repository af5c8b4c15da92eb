"""Training data for the pixel quality-control model.

Positives are chest radiographs as they are, from two populations (Kermany children, NIH
adults); the other chest classes are the same radiographs rotated, mirrored or inverted;
negatives are real images of other modalities shipped with pydicom (CT, MR, NM, US, SEG,
secondary captures). Negative files are split by file, so the held-out evaluation sees images
from files the model never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

QC_CLASSES = ("frontal_chest", "rotated_90", "rotated_180", "rotated_270",
              "flipped_left_right", "inverted", "not_chest_radiograph")
ACCEPTED_CLASS = 0
NOT_CHEST = QC_CLASSES.index("not_chest_radiograph")
ITEM_SIZE = 128
MAX_FRAMES_PER_FILE = 10

NEGATIVE_FILES = {
    "train": ("693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "JPEG2000.dcm", "MR_small.dcm",
              "image_dfl.dcm", "liver_1frame.dcm", "examples_ybr_color.dcm", "SC_rgb_jpeg.dcm",
              "GDCMJ2K_TextGBR.dcm", "rtdose.dcm"),
    "test": ("CT_small.dcm", "examples_overlay.dcm", "examples_rgb_color.dcm",
             "SC_jpeg_no_color_transform.dcm", "examples_jpeg2k.dcm"),
}


def pydicom_test_folder() -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"


def other_modality_images(split: str) -> list[np.ndarray]:
    """Grey-level frames (float32, H x W) of the held-in or held-out negative files."""
    import pydicom

    frames = []
    for name in NEGATIVE_FILES[split]:
        ds = pydicom.dcmread(pydicom_test_folder() / name)
        pixels = np.asarray(ds.pixel_array, dtype=np.float32)
        if ds.get("NumberOfFrames", 1) > 1:
            pixels = pixels[:: max(1, len(pixels) // MAX_FRAMES_PER_FILE)][:MAX_FRAMES_PER_FILE]
        else:
            pixels = pixels[None]
        if ds.SamplesPerPixel == 3:
            pixels = pixels.mean(axis=-1)
        frames.extend(pixels)
    return frames


def chest_variant(image: np.ndarray, qc_class: int) -> np.ndarray:
    """The radiograph as the given class shows it (class 0 leaves it unchanged)."""
    name = QC_CLASSES[qc_class]
    if name.startswith("rotated_"):
        return np.rot90(image, k=int(name.split("_")[1]) // 90).copy()
    if name == "flipped_left_right":
        return image[:, ::-1].copy()
    if name == "inverted":
        return image.max() + image.min() - image
    return image


def random_view(image: np.ndarray, rng: np.random.Generator, min_crop: float) -> np.ndarray:
    """A random crop (keeping `min_crop` or more of each side) with a random exposure gamma."""
    h, w = image.shape
    ch, cw = (int(n * rng.uniform(min_crop, 1.0)) for n in (h, w))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = image[top:top + ch, left:left + cw]
    low, high = float(crop.min()), float(crop.max())
    unit = (crop - low) / (high - low + 1e-6)
    return unit ** rng.uniform(0.7, 1.4) * (high - low) + low


def to_item(image: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=(ITEM_SIZE, ITEM_SIZE), mode="bilinear",
                         antialias=True, align_corners=False)[0]


@dataclass(frozen=True)
class ChestPool:
    """One population's radiographs, (N, H, W), and the share of chest items drawn from it."""

    population: str
    images: np.ndarray
    share: float


class QcDataset(Dataset):
    """Balanced over the QC classes: item i has class i mod 7.

    A chest item first draws its population by the pools' shares, then an image of that
    population, so a small population gets its share however few images it has.
    With `augment`, each access draws a fresh random image and view (reproducible under the
    training seed); without, item i is fixed by (seed, i), so validation and test sets are
    the same on every run.
    """

    def __init__(self, pools: Sequence[ChestPool], negatives: list[np.ndarray], length: int,
                 seed: int, augment: bool):
        shares = np.array([pool.share for pool in pools], dtype=float)
        if not len(pools) or (shares <= 0).any() or not np.isclose(shares.sum(), 1.0):
            given = {pool.population: pool.share for pool in pools}
            raise ValueError(f"chest pool shares must be positive and sum to 1, got {given}")
        self.pools, self.shares, self.negatives = list(pools), shares, negatives
        self.length, self.seed, self.augment = length, seed, augment

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        if self.augment:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        return np.random.default_rng([self.seed, index])

    def image_and_class(self, index: int) -> tuple[np.ndarray, int]:
        rng, qc_class = self.rng(index), index % len(QC_CLASSES)
        if qc_class == NOT_CHEST:
            image = self.negatives[rng.integers(len(self.negatives))].astype(np.float32)
            image = chest_variant(image, int(rng.integers(0, NOT_CHEST)))
            return random_view(image, rng, 0.5), qc_class
        pool = self.pools[rng.choice(len(self.pools), p=self.shares)]
        image = pool.images[rng.integers(len(pool.images))].astype(np.float32)
        if self.augment:
            image = random_view(image, rng, 0.85)
        return chest_variant(image, qc_class), qc_class

    def __getitem__(self, index: int) -> dict:
        image, qc_class = self.image_and_class(index)
        return {"pixel_values": to_item(image), "labels": torch.tensor(qc_class)}
