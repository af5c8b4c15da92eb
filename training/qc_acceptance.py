"""The QC model's acceptance prior, fitted on validation radiographs of both populations.

A mirrored radiograph differs from a good one only in laterality cues (the heart's side, the
aortic knob, the gastric bubble), so the network's errors on good images are mostly "mirrored".
Export adds a logit offset to the accepted class, inside the graph, so the service's rule (the
most probable class) stays as it is: the smallest offset of `OFFSETS` with which every
population's validation false rejection is at most `FALSE_REJECTION_TARGET`. The test
radiographs play no part in it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clinassist.training import cxr_data, nih_adult_data, qc_data
from clinassist.training.cxr_export import ExportError
from clinassist.training.cxr_populations import ADULT, PAEDIATRIC

FALSE_REJECTION_TARGET = 0.03  # the adult goal of issue 10, on validation
OFFSETS = tuple(np.round(np.arange(0, 3.01, 0.25), 2))


def class_probabilities(predict: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray],
                        batch: int = 64) -> np.ndarray:
    """(N, classes) probabilities; images of one shape share calls of `predict`, which takes
    (B, 1, H, W) float32 pixels."""
    out = np.empty((len(images), len(qc_data.QC_CLASSES)), dtype=np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        by_shape[image.shape].append(index)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch):
            chunk = indices[start:start + batch]
            out[chunk] = predict(np.stack([images[i] for i in chunk])[:, None].astype(np.float32))
    return out


def shifted(probabilities: np.ndarray, offset: float) -> np.ndarray:
    """The probabilities the graph gives with `offset` added to the accepted class's logit."""
    logits = np.log(np.clip(probabilities, 1e-30, None))
    logits[:, qc_data.ACCEPTED_CLASS] += offset
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class ValidationPart:
    """One population's validation radiographs in every chest class."""

    description: str
    items: list[np.ndarray]
    truth: np.ndarray
    aged_18_plus: np.ndarray | None  # per radiograph, adults' part only


def adult_radiographs(records: list[nih_adult_data.Record]) -> np.ndarray:
    """NIH radiographs at the dataset's 512 px, as the service receives them (checksummed)."""
    nih_adult_data.verify_images(records)
    return nih_adult_data.load_pixels(records).astype(np.float32)


def chest_items(images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Every radiograph in each chest class (all as class 0, then all as class 1, ...)."""
    items = [qc_data.chest_variant(image, qc_class)
             for qc_class in range(qc_data.NOT_CHEST) for image in images]
    return items, np.repeat(np.arange(qc_data.NOT_CHEST), len(images))


def validation_parts(cfg: dict) -> dict[str, ValidationPart]:
    """The Kermany validation split of the run's config and the NIH validation patients."""
    kermany = cxr_data.make_splits(cxr_data.read_manifest(), cfg["val_fraction"], cfg["seed"]).val
    adult = nih_adult_data.make_splits(nih_adult_data.read_manifest()).val
    cxr_data.verify_images(kermany)
    parts = {}
    for population, description, pixels, aged in (
            (PAEDIATRIC, f"{len(kermany)} Kermany validation radiographs",
             cxr_data.load_pixels(kermany).astype(np.float32), None),
            (ADULT, f"{len(adult)} NIH validation-patient radiographs (512 px)",
             adult_radiographs(adult), np.array([r.adult for r in adult]))):
        items, truth = chest_items(pixels)
        parts[population] = ValidationPart(f"{description} in {qc_data.NOT_CHEST} chest classes",
                                           items, truth, aged)
    return parts


def false_rejection(probabilities: np.ndarray, truth: np.ndarray) -> float:
    frontal = truth == qc_data.ACCEPTED_CLASS
    return float(np.mean(probabilities[frontal].argmax(1) != qc_data.ACCEPTED_CLASS))


def fit_offset(scored: dict[str, tuple[np.ndarray, np.ndarray]]) -> float:
    """The smallest offset with which every population (probabilities, truth) meets the
    target; an ExportError names the best reachable when none does."""
    for offset in OFFSETS:
        if all(false_rejection(shifted(p, offset), t) <= FALSE_REJECTION_TARGET
               for p, t in scored.values()):
            return float(offset)
    best = {population: false_rejection(shifted(p, OFFSETS[-1]), t)
            for population, (p, t) in scored.items()}
    raise ExportError(f"no acceptance offset up to {OFFSETS[-1]} brings validation false "
                      f"rejection to {FALSE_REJECTION_TARGET:.0%} in every population "
                      f"(at {OFFSETS[-1]}: {best}); train a better run")
