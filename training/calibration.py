"""Temperature scaling and operating-point choice, both fitted on the validation split only."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar


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
