"""Evaluate a chest-radiograph bundle (its ONNX file, as served) on each population's test set:
the official Kermany test split (children) and the adult NIH test patients.

Each population is scored at its own operating point (temperature and threshold from the
bundle's metadata, fitted on that population's validation set). For adults the AUC is also
given within each view (AP, PA) and on the ID-matched part, since this adult selection's views
and acquisition periods differ by class: a model that scored the view or the period instead of
the disease would lose its AUC there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clinassist.bundle import Bundle
from clinassist.training import calibration
from clinassist.training.cxr_populations import ADULT, LabelledImages, test_sets
from clinassist.training.metrics import (auc, binary_metrics, confusion,
                                         specificity_at_sensitivity, with_bootstrap)

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
GOAL_SENSITIVITY = 0.90  # adult goal: specificity at sensitivity >= 0.90


def probabilities_of(bundle: Bundle, images: LabelledImages) -> np.ndarray:
    """The calibrated probability the service gives each image of `images`' population."""
    point = bundle.metadata["populations"][images.population]
    logits = bundle.run_batched("image", images.as_batch())["logit"]
    return calibration.sigmoid(logits / point["temperature"])


def population_metrics(threshold: float, images: LabelledImages) -> tuple[dict, dict]:
    """The metrics of one population and the masks of its subgroup metrics."""
    metrics = {**binary_metrics(threshold),
               f"specificity_at_sensitivity_{GOAL_SENSITIVITY:.2f}":
                   lambda p, y: specificity_at_sensitivity(p, y, GOAL_SENSITIVITY)}
    masks = {}
    if images.views is not None:
        for view in np.unique(images.views):
            metrics[f"auc_{view}"] = auc
            masks[f"auc_{view}"] = images.views == view
    if images.id_matched is not None:
        metrics["auc_id_matched"] = auc
        masks["auc_id_matched"] = images.id_matched | (images.targets == 0)
    return metrics, masks


def view_only_auc(images: LabelledImages) -> float:
    """What the view alone achieves (PA scored 1): the shortcut the model must not take."""
    return auc((images.views == "PA").astype(float), images.targets)


def evaluate_population(bundle: Bundle, images: LabelledImages,
                        plots_dir: Path | None = None) -> dict:
    point = bundle.metadata["populations"][images.population]
    threshold = point["threshold"]
    probabilities = probabilities_of(bundle, images)
    metrics, masks = population_metrics(threshold, images)
    result = {
        "split": images.part,
        "images": int(len(images)),
        "positives": int(images.targets.sum()),
        "patients": int(len(np.unique(images.patients))),
        "temperature": point["temperature"],
        "threshold": threshold,
        "metrics": with_bootstrap(metrics, probabilities, images.targets, BOOTSTRAP_RESAMPLES,
                                  BOOTSTRAP_SEED, groups=images.patients, masks=masks),
        "confusion_at_threshold": confusion(probabilities, images.targets, threshold),
        "confusion_at_0.5": confusion(probabilities, images.targets, 0.5),
    }
    if images.views is not None:
        result["views"] = {view: {"images": int(np.sum(images.views == view)),
                                  "positives": int(images.targets[images.views == view].sum())}
                           for view in np.unique(images.views)}
        result["view_only_auc"] = view_only_auc(images)
    if plots_dir is not None:
        from clinassist.training.plots import save_evaluation_plots

        save_evaluation_plots(probabilities, images.targets, threshold, plots_dir,
                              f"{images.population} {images.part}", prefix=f"{images.population}_")
    return result


def evaluate(bundle: Bundle, plots_dir: Path | None = None) -> dict:
    """Metrics per population with 95 % bootstrap intervals (patients resampled whole);
    ROC, calibration and confusion plots per population if asked."""
    return {
        "model": bundle.name,
        "version": bundle.version,
        "populations": {name: evaluate_population(bundle, images, plots_dir)
                        for name, images in test_sets().items()},
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED,
                      "stratified": True, "unit": "patient"},
    }


def format_table(result: dict) -> str:
    lines = [f"{result['model']} {result['version']}"]
    for name, block in result["populations"].items():
        lines.append(f"{name}: {block['split']}, {block['images']} images of "
                     f"{block['patients']} patients ({block['positives']} pneumonia), "
                     f"threshold {block['threshold']:.3f}")
        for metric, entry in block["metrics"].items():
            low, high = entry["ci95"]
            lines.append(f"  {metric:<34} {entry['value']:.3f}  (95% CI {low:.3f}-{high:.3f})")
        c = block["confusion_at_threshold"]
        lines.append(f"  confusion at threshold             TP {c['tp']} FP {c['fp']} "
                     f"TN {c['tn']} FN {c['fn']}")
        if name == ADULT:
            lines.append(f"  view alone (PA = 1) would give AUC {block['view_only_auc']:.3f}")
    return "\n".join(lines)
