"""Binary-classification metrics with bootstrap confidence intervals."""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

Metric = Callable[[np.ndarray, np.ndarray], float]


def sensitivity(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    return float(np.mean(probabilities[targets == 1] >= threshold))


def specificity(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    return float(np.mean(probabilities[targets == 0] < threshold))


def accuracy(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    return float(np.mean((probabilities >= threshold) == (targets == 1)))


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray,
                               bins: int = 15) -> float:
    """ECE over equal-width probability bins, weighted by the share of cases in each bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.mean() * abs(probabilities[in_bin].mean() - targets[in_bin].mean())
    return float(error)


def confusion(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> dict:
    flagged = probabilities >= threshold
    return {"tp": int(np.sum(flagged & (targets == 1))), "fp": int(np.sum(flagged & (targets == 0))),
            "tn": int(np.sum(~flagged & (targets == 0))), "fn": int(np.sum(~flagged & (targets == 1)))}


def binary_metrics(threshold: float) -> dict[str, Metric]:
    return {
        "auc": lambda p, y: float(roc_auc_score(y, p)),
        "accuracy_at_0.5": lambda p, y: accuracy(p, y, 0.5),
        "sensitivity_at_threshold": lambda p, y: sensitivity(p, y, threshold),
        "specificity_at_threshold": lambda p, y: specificity(p, y, threshold),
        "accuracy_at_threshold": lambda p, y: accuracy(p, y, threshold),
        "ece": expected_calibration_error,
    }


def with_bootstrap(metrics: dict[str, Metric], probabilities: np.ndarray, targets: np.ndarray,
                   resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Each metric's point value and percentile interval over stratified bootstrap resamples."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(targets == c) for c in (0, 1)]
    draws = {name: [] for name in metrics}
    for _ in range(resamples):
        idx = np.concatenate([rng.choice(members, len(members)) for members in by_class])
        for name, metric in metrics.items():
            draws[name].append(metric(probabilities[idx], targets[idx]))
    tail = (1 - level) / 2 * 100
    return {
        name: {"value": metric(probabilities, targets),
               "ci95": [float(np.percentile(draws[name], tail)),
                        float(np.percentile(draws[name], 100 - tail))]}
        for name, metric in metrics.items()
    }
