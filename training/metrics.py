"""Binary-classification metrics with bootstrap confidence intervals.

The ROC curve is computed here rather than with scikit-learn's `roc_curve`/`roc_auc_score`,
to the same points: a bootstrap calls it thousands of times on a few hundred cases, where
scikit-learn's input validation costs some twenty times the computation (a cxr evaluation spent
two thirds of its time there)."""

from __future__ import annotations

from typing import Callable

import numpy as np

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


def roc_points(probabilities: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates from (0, 0), one point per distinct score from the highest
    down, a point on the straight line between its neighbours dropped: scikit-learn's
    `roc_curve` (drop_intermediate=True). Both classes must be present."""
    scores = np.asarray(probabilities)
    order = np.argsort(scores, kind="stable")[::-1]
    ends = np.r_[np.flatnonzero(np.diff(scores[order])), len(order) - 1]  # last of each tie
    true_positives = np.cumsum(np.asarray(targets)[order] == 1, dtype=np.float64)[ends]
    false_positives = 1 + ends - true_positives
    if len(ends) > 2:
        bends = np.logical_or(np.diff(false_positives, 2), np.diff(true_positives, 2))
        kept = np.r_[True, bends, True]
        true_positives, false_positives = true_positives[kept], false_positives[kept]
    true_positives, false_positives = np.r_[0.0, true_positives], np.r_[0.0, false_positives]
    return false_positives / false_positives[-1], true_positives / true_positives[-1]


def both_classes(targets: np.ndarray) -> bool:
    return bool(np.any(targets == 1) and np.any(targets != 1))


def auc(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """ROC AUC (trapezoids under `roc_points`, as scikit-learn's `roc_auc_score`); NaN when
    only one class is present (a small subgroup of a resample)."""
    if not both_classes(targets):
        return float("nan")
    fpr, tpr = roc_points(probabilities, targets)
    return float(np.trapezoid(tpr, fpr))


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
    of the ROC curve: an evaluation figure, not a threshold choice); NaN when only one class is
    present."""
    if not both_classes(targets):
        return float("nan")
    fpr, tpr = roc_points(probabilities, targets)
    return float(1 - fpr[tpr >= min_sensitivity].min())


class Resampler:
    """Stratified bootstrap resamples of the cases: by class, or with `groups` (patients) whole
    groups, stratified by whether the group holds a positive. The strata are worked out once,
    so each draw costs only the random choice."""

    def __init__(self, targets: np.ndarray, groups: np.ndarray | None = None) -> None:
        if groups is None:
            self._members = None
            self._strata = [np.flatnonzero(targets == c) for c in (0, 1)]
            return
        names, which = np.unique(groups, return_inverse=True)
        self._members = [np.flatnonzero(which == g) for g in range(len(names))]
        positive = np.array([targets[m].max() for m in self._members])
        self._strata = [np.flatnonzero(positive == c) for c in (0, 1)]

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One resample's indices."""
        chosen = np.concatenate([rng.choice(stratum, len(stratum)) for stratum in self._strata])
        if self._members is None:
            return chosen
        return np.concatenate([self._members[g] for g in chosen])


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
    resampler = Resampler(targets, groups)
    draws = {name: [] for name in metrics}
    for _ in range(resamples):
        idx = resampler.draw(rng)
        for name, metric in metrics.items():
            draws[name].append(value(name, metric, idx))
    tail = (1 - level) / 2 * 100
    return {
        name: {"value": value(name, metric, everything),
               "ci95": [float(np.nanpercentile(draws[name], tail)),
                        float(np.nanpercentile(draws[name], 100 - tail))]}
        for name, metric in metrics.items()
    }
