"""Temperature scaling and operating-point choice, both fitted on the validation split only."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

# Sensitivity targets of the triage threshold, tried in order: the first whose specificity (on
# the fitting set) is at least MIN_USEFUL_SPECIFICITY is used, since a worklist that flags most
# normals as urgent is worse than none; if none is, the last target.
SENSITIVITY_TARGETS = (0.95, 0.90)
MIN_USEFUL_SPECIFICITY = 0.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def binary_nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of Bernoulli targets under sigmoid(logits), computed stably."""
    signs = np.where(targets == 1, 1.0, -1.0)
    return float(np.mean(np.logaddexp(0.0, -signs * logits)))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of sigmoid(logits / T)."""
    result = minimize_scalar(lambda log_t: binary_nll(logits / np.exp(log_t), targets),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def threshold_for_sensitivity(probabilities: np.ndarray, targets: np.ndarray,
                              min_sensitivity: float) -> float:
    """The highest threshold t for which flagging `probability >= t` keeps the sensitivity target."""
    positives = np.sort(probabilities[targets == 1])[::-1]
    if len(positives) == 0:
        raise ValueError("cannot choose an operating point without positive cases")
    needed = int(np.ceil(min_sensitivity * len(positives)))
    return float(positives[needed - 1])


def choose_threshold(probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, str]:
    """The triage threshold and, in words, the criterion it met (see SENSITIVITY_TARGETS)."""
    negatives = probabilities[targets == 0]
    for target in SENSITIVITY_TARGETS:
        threshold = threshold_for_sensitivity(probabilities, targets, target)
        if np.mean(negatives < threshold) >= MIN_USEFUL_SPECIFICITY:
            break
    return threshold, (f"highest threshold with sensitivity >= {target} (targets tried in order "
                       f"{list(SENSITIVITY_TARGETS)}: the first leaving specificity >= "
                       f"{MIN_USEFUL_SPECIFICITY})")
