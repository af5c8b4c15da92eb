"""Paired comparisons of two models scored on the same cases.

- AUC: DeLong, DeLong and Clarke-Pearson's variance of the difference of two correlated AUCs
  (Biometrics 1988;44:837-845), computed with the fast midrank algorithm of Sun and Xu
  (IEEE Signal Processing Letters 2014;21(11):1389-1393): O((m + n) log(m + n)) per model
  instead of the m x n comparisons of the original (midranks from scipy's `rankdata`). No PyPI
  package for it is well kept (the few that exist are single-author releases without tests
  against the reference), so it is written out here and tested against the O(m n) definition.
- Sensitivity and specificity at each model's own threshold: a paired bootstrap, both models
  scored on the same resamples of whole patients (stratified by whether the patient has a
  positive image), so the correlation of their errors is kept.

Every difference is candidate - production; `lower_95` is its one-sided 95 % lower confidence
bound, the figure a non-inferiority margin is checked against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm, rankdata

from clinassist.training.metrics import Resampler

ONE_SIDED_LEVEL = 0.95
Z_ONE_SIDED = float(norm.ppf(ONE_SIDED_LEVEL))


@dataclass(frozen=True)
class PairedDifference:
    metric: str
    method: str
    candidate: float
    production: float
    difference: float  # candidate - production
    lower_95: float  # one-sided 95 % lower confidence bound of the difference
    p_candidate_better: float  # one-sided p-value of "the candidate is not better"

    def as_json(self) -> dict:
        return asdict(self)


def structural_components(positives: np.ndarray, negatives: np.ndarray
                          ) -> tuple[float, np.ndarray, np.ndarray]:
    """One model's AUC and DeLong's structural components V10 (one per positive: the share of
    negatives it outscores, ties counting half) and V01 (one per negative: the share of
    positives that outscore it), from midranks (Sun & Xu, eq. 8-10)."""
    m, n = len(positives), len(negatives)
    combined = rankdata(np.concatenate([positives, negatives]), method="average")  # midranks
    v10 = (combined[:m] - rankdata(positives, method="average")) / n
    v01 = 1.0 - (combined[m:] - rankdata(negatives, method="average")) / m
    return float(v10.mean()), v10, v01


def delong(targets: np.ndarray, candidate: np.ndarray, production: np.ndarray) -> PairedDifference:
    """DeLong's test of the two AUCs on the same cases (`targets` 1 positive, 0 negative)."""
    positive = targets == 1
    if positive.sum() < 2 or (~positive).sum() < 2:
        raise ValueError("DeLong's test needs at least two positive and two negative cases")
    auc_c, v10_c, v01_c = structural_components(candidate[positive], candidate[~positive])
    auc_p, v10_p, v01_p = structural_components(production[positive], production[~positive])
    s10 = np.cov(np.vstack([v10_c, v10_p]))  # covariance over positives (2 x 2)
    s01 = np.cov(np.vstack([v01_c, v01_p]))  # covariance over negatives
    covariance = s10 / positive.sum() + s01 / (~positive).sum()
    variance = max(float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]), 0.0)
    difference = auc_c - auc_p
    se = variance ** 0.5
    if se == 0.0:  # the two rank the cases identically: the difference is exact
        p = 0.0 if difference > 0 else 1.0
    else:
        p = float(norm.sf(difference / se))
    return PairedDifference("auc", "DeLong (Sun & Xu fast algorithm)", auc_c, auc_p,
                            difference, difference - Z_ONE_SIDED * se, p)


def rate(flags: np.ndarray, targets: np.ndarray, metric: str) -> float:
    """Sensitivity (flagged share of positives) or specificity (unflagged share of negatives)."""
    if metric == "sensitivity":
        return float(np.mean(flags[targets == 1]))
    return float(np.mean(~flags[targets == 0]))


def paired_bootstrap(targets: np.ndarray, candidate_flags: np.ndarray,
                     production_flags: np.ndarray, groups: np.ndarray,
                     resamples: int = 2000, seed: int = 0) -> dict[str, PairedDifference]:
    """Sensitivity and specificity of each model's flags (`probability >= its threshold`) and
    their differences over paired, patient-level, stratified bootstrap resamples."""
    rng = np.random.default_rng(seed)
    metrics = ("sensitivity", "specificity")
    draws = {metric: np.empty(resamples) for metric in metrics}
    resampler = Resampler(targets, groups)
    for index in range(resamples):
        idx = resampler.draw(rng)
        for metric in metrics:
            draws[metric][index] = (rate(candidate_flags[idx], targets[idx], metric)
                                    - rate(production_flags[idx], targets[idx], metric))
    out = {}
    for metric in metrics:
        c, p = rate(candidate_flags, targets, metric), rate(production_flags, targets, metric)
        out[metric] = PairedDifference(
            metric, f"paired bootstrap, {resamples} patient resamples", c, p, c - p,
            float(np.quantile(draws[metric], 1 - ONE_SIDED_LEVEL)),
            float(np.mean(draws[metric] <= 0)))
    return out
