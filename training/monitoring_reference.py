"""The validation reference that drift monitoring compares live triages with.

    .venv/bin/clinassist monitor reference     # -> models/cxr_pneumonia/monitoring_reference.json

Runs the committed bundle, as the service does (`serving.imaging.triage.Models`, ONNX Runtime),
on each population's validation images (`cxr_populations.validation_sets`, the images the
operating points were fitted on), with each population's operating point, and keeps, per
population and pooled, the deciles of the score and of three image statistics, the flag rate
and the sensitivity and specificity at the operating point. Rerun it whenever the bundle
changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clinassist.bundle import Bundle, read_metadata
from clinassist.config import bundle_dir
from clinassist.serving.imaging.monitoring import (FEATURES, POOLED, REFERENCE_FILE, Histogram,
                                                   ImageStats, PopulationReference, Reference)
from clinassist.serving.imaging.triage import CXR_BUNDLE, QC_BUNDLE, Models
from clinassist.training import cxr_populations

BATCH = 32
EIGHT_BIT_WHITE = 255.0  # the validation images are 8-bit display-ready radiographs


def operating_point(metadata: dict, population: str) -> tuple[float | None, float]:
    """(temperature, threshold) the service applies to `population`: per population in a bundle
    whose graph outputs the logit, one calibrated threshold in a bundle that outputs the
    probability (temperature None)."""
    if "populations" in metadata:
        point = metadata["populations"][population]
        return point["temperature"], point["threshold"]
    return None, metadata["operating_point"]["threshold"]


def served_probabilities(models: Models, pixels: np.ndarray, temperature: float | None
                         ) -> np.ndarray:
    """What the service would answer for each image."""
    name = "probability" if temperature is None else "logit"
    out = models.cxr.run_batched("image", pixels[:, None].astype(np.float32), BATCH)[name]
    out = out.astype(np.float64)
    return out if temperature is None else 1.0 / (1.0 + np.exp(-out / temperature))


def population_reference(scores: np.ndarray, flagged: np.ndarray, stats: list[ImageStats],
                         targets: np.ndarray) -> PopulationReference:
    positives, negatives = targets == 1, targets == 0
    values = {"score": scores, **{name: np.array([getattr(s, name) for s in stats])
                                  for name in FEATURES if name != "score"}}
    return PopulationReference(
        images=len(scores), flag_rate=float(flagged.mean()),
        sensitivity=float(flagged[positives].mean()) if positives.any() else float("nan"),
        specificity=float((~flagged[negatives]).mean()) if negatives.any() else float("nan"),
        features={name: Histogram.fit(values[name]) for name in FEATURES})


def build_reference(models: Models, sets: dict[str, cxr_populations.LabelledImages]
                    ) -> Reference:
    """The reference of `models` on the labelled image `sets` (one per population)."""
    metadata = models.cxr.metadata
    parts = {}
    for name, images in sets.items():
        temperature, threshold = operating_point(metadata, name)
        scores = served_probabilities(models, images.pixels, temperature)
        stats = [ImageStats.of(image, white=EIGHT_BIT_WHITE) for image in images.pixels]
        parts[name] = (scores, scores >= threshold, stats, np.asarray(images.targets))
    populations = {name: population_reference(*part) for name, part in parts.items()}
    populations[POOLED] = population_reference(
        *(np.concatenate([part[i] for part in parts.values()]) for i in (0, 1)),
        [s for part in parts.values() for s in part[2]],
        np.concatenate([part[3] for part in parts.values()]))
    return Reference({"name": metadata["name"], "version": metadata["version"],
                      "sha256": metadata["sha256"]}, populations)


def write_reference(bundle: Path | None = None, limit: int | None = None) -> Path:
    """Compute the reference of the cxr bundle and write it beside the bundle."""
    bundle = bundle or bundle_dir(CXR_BUNDLE)
    _, metadata = read_metadata(bundle)
    sets = cxr_populations.validation_sets(metadata["training_configs"][0])
    if limit is not None:
        sets = {name: _first(images, limit) for name, images in sets.items()}
    models = Models(Bundle.load(bundle), Bundle.load(QC_BUNDLE))
    reference = build_reference(models, sets)
    path = bundle / REFERENCE_FILE
    path.write_text(json.dumps(reference.to_json(), indent=1) + "\n")
    return path


def _first(images: cxr_populations.LabelledImages, count: int) -> cxr_populations.LabelledImages:
    from dataclasses import replace

    return replace(images, pixels=images.pixels[:count], targets=images.targets[:count],
                   patients=images.patients[:count],
                   views=None if images.views is None else images.views[:count],
                   id_matched=None if images.id_matched is None else images.id_matched[:count])
