"""Binary-classification metrics with bootstrap confidence intervals."""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

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


def auc(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present (a small subgroup of a resample)."""
    if len(np.unique(targets)) < 2:
        return float("nan")
    return float(roc_auc_score(targets, probabilities))


def binary_metrics(threshold: float) -> dict[str, Metric]:
    return {
        "auc": auc,
        "accuracy_at_0.5": lambda p, y: accuracy(p, y, 0.5),
        "sensitivity_at_threshold": lambda p, y: sensitivity(p, y, threshold),
        "specificity_at_threshold": lambda p, y: specificity(p, y, threshold),
        "accuracy_at_threshold": lambda p, y: accuracy(p, y, threshold),
        "ece": expected_calibration_error,
    }


def specificity_at_sensitivity(probabilities: np.ndarray, targets: np.ndarray,
                               min_sensitivity: float) -> float:
    """The best specificity of any threshold whose sensitivity reaches `min_sensitivity` (a point
    of the ROC curve: an evaluation figure, not a threshold choice)."""
    fpr, tpr, _ = roc_curve(targets, probabilities)
    return float(1 - fpr[tpr >= min_sensitivity].min())


def bootstrap_draws(targets: np.ndarray, rng: np.random.Generator,
                    groups: np.ndarray | None) -> np.ndarray:
    """One resample's indices: stratified by class; with `groups` (patients), whole groups are
    drawn, stratified by whether the group holds a positive."""
    if groups is None:
        by_class = [np.flatnonzero(targets == c) for c in (0, 1)]
        return np.concatenate([rng.choice(members, len(members)) for members in by_class])
    names, which = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(which == g) for g in range(len(names))]
    positive = np.array([targets[m].max() for m in members])
    chosen = np.concatenate([rng.choice(np.flatnonzero(positive == c), np.sum(positive == c))
                             for c in (0, 1)])
    return np.concatenate([members[g] for g in chosen])


def with_bootstrap(metrics: dict[str, Metric], probabilities: np.ndarray, targets: np.ndarray,
                   resamples: int = 2000, seed: int = 0, level: float = 0.95,
                   groups: np.ndarray | None = None,
                   masks: dict[str, np.ndarray] | None = None) -> dict:
    """Each metric's point value and percentile interval over stratified bootstrap resamples
    (of whole `groups`, e.g. patients, when given). A metric named in `masks` is computed on
    the items its mask selects (a subgroup such as one view), in the data and in each resample."""
    masks = masks or {}
    rng = np.random.default_rng(seed)

    def value(name: str, metric: Metric, idx: np.ndarray) -> float:
        if name in masks:
            idx = idx[masks[name][idx]]
        return metric(probabilities[idx], targets[idx])

    everything = np.arange(len(targets))
    draws = {name: [] for name in metrics}
    for _ in range(resamples):
        idx = bootstrap_draws(targets, rng, groups)
        for name, metric in metrics.items():
            draws[name].append(value(name, metric, idx))
    tail = (1 - level) / 2 * 100
    return {
        name: {"value": value(name, metric, everything),
               "ci95": [float(np.nanpercentile(draws[name], tail)),
                        float(np.nanpercentile(draws[name], 100 - tail))]}
        for name, metric in metrics.items()
    }
