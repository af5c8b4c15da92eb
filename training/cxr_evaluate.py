"""Evaluate a chest-radiograph bundle (its ONNX file, as served) on the official test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clinassist.bundle import Bundle
from clinassist.training import cxr_data
from clinassist.training.metrics import binary_metrics, confusion, with_bootstrap

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def predict_test(bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    test = [r for r in cxr_data.read_manifest() if r.split == "test"]
    cxr_data.verify_images(test)
    pixels = cxr_data.load_pixels(test).astype(np.float32)[:, None]
    return bundle.run_batched("image", pixels)["probability"], cxr_data.labels(test)


def evaluate(bundle: Bundle, plots_dir: Path | None = None) -> dict:
    """Metrics with 95% bootstrap intervals; ROC, calibration and confusion plots if asked."""
    threshold = bundle.metadata["operating_point"]["threshold"]
    probabilities, targets = predict_test(bundle)
    result = {
        "model": bundle.name,
        "version": bundle.version,
        "split": "official test (624 images)",
        "images": int(len(targets)),
        "positives": int(targets.sum()),
        "threshold": threshold,
        "metrics": with_bootstrap(binary_metrics(threshold), probabilities, targets,
                                  BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED),
        "confusion_at_threshold": confusion(probabilities, targets, threshold),
        "confusion_at_0.5": confusion(probabilities, targets, 0.5),
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED,
                      "stratified": True},
    }
    if plots_dir is not None:
        from clinassist.training.plots import save_evaluation_plots

        save_evaluation_plots(probabilities, targets, threshold, plots_dir)
    return result


def format_table(result: dict) -> str:
    lines = [f"{result['model']} {result['version']} on the {result['split']}, "
             f"threshold {result['threshold']:.3f}"]
    for name, entry in result["metrics"].items():
        low, high = entry["ci95"]
        lines.append(f"  {name:<26} {entry['value']:.3f}  (95% CI {low:.3f}-{high:.3f})")
    c = result["confusion_at_threshold"]
    lines.append(f"  confusion at threshold     TP {c['tp']} FP {c['fp']} TN {c['tn']} FN {c['fn']}")
    return "\n".join(lines)

