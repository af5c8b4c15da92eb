"""The two populations the chest-radiograph model is validated on, as labelled image sets.

- paediatric: Kermany children aged 1-5 (validation carved from the official train split by
  the run's config; test = the official test split);
- adult: NIH ChestX-ray14 patients aged 18 and over (the fixed patient-grouped split of
  `nih_adult_data`; its validation and test parts, never its train part).

Calibration and thresholds are fitted on each population's validation set, evaluation runs
on its test set; the two never mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clinassist.training import cxr_data, nih_adult_data

PAEDIATRIC, ADULT = "paediatric", "adult"
POPULATIONS = (PAEDIATRIC, ADULT)
DESCRIPTIONS = {
    PAEDIATRIC: "children aged 1-5 (Kermany et al. 2018, one centre in Guangzhou)",
    ADULT: "adults aged 18 and over (NIH ChestX-ray14, NIH Clinical Center)",
}


@dataclass(frozen=True)
class LabelledImages:
    """One population's images: raw pixels (each (H, W), any size), labels and, for adults,
    the view, the patient and whether the patient ID lies in the normals' acquisition range."""

    population: str
    part: str
    pixels: np.ndarray
    targets: np.ndarray
    patients: np.ndarray
    views: np.ndarray | None = None
    id_matched: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def as_batch(self) -> np.ndarray:
        """(N, 1, H, W) float32, what the exported graph takes."""
        return self.pixels.astype(np.float32)[:, None]


def kermany_images(records: list[cxr_data.Record], part: str) -> LabelledImages:
    cxr_data.verify_images(records)
    return LabelledImages(PAEDIATRIC, part, cxr_data.load_pixels(records),
                          cxr_data.labels(records),
                          np.array([f"{r.split}:{r.patient_id}" for r in records]))


def adult_images(records: list[nih_adult_data.Record], part: str) -> LabelledImages:
    """The adults (18 and over) among `records`, at the dataset's own 512 px."""
    adults = [r for r in records if r.adult]
    nih_adult_data.verify_images(adults)
    return LabelledImages(ADULT, part, nih_adult_data.load_pixels(adults),
                          nih_adult_data.labels(adults), np.array([r.patient_id for r in adults]),
                          nih_adult_data.views(adults), np.array([r.id_matched for r in adults]))


def validation_sets(cfg: dict) -> dict[str, LabelledImages]:
    """Each population's validation set: what calibration and thresholds are fitted on."""
    kermany = cxr_data.make_splits(cxr_data.read_manifest(), cfg["val_fraction"], cfg["seed"])
    adult = nih_adult_data.make_splits(nih_adult_data.read_manifest())
    return {PAEDIATRIC: kermany_images(kermany.val, "validation"),
            ADULT: adult_images(adult.val, "validation")}


def test_sets() -> dict[str, LabelledImages]:
    """Each population's held-out test set: for evaluation only."""
    kermany_test = [r for r in cxr_data.read_manifest() if r.split == "test"]
    adult = nih_adult_data.make_splits(nih_adult_data.read_manifest())
    return {PAEDIATRIC: kermany_images(kermany_test, "official test split"),
            ADULT: adult_images(adult.test, "test patients")}
