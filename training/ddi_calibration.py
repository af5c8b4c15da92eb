"""Calibration, the serving threshold and the applicability domain of the interaction model,
all fitted on validation pairs only.

- P(interaction): Platt scaling, sigmoid(scale * logit + bias), fitted by maximum likelihood on
  the matched validation pairs (so it is a probability for the 1:1 degree-matched mix).
- Type probabilities: one temperature over the 86 logits, fitted on validation positives.
- Threshold: the lowest P(interaction) at which the false-alarm rate on validation negatives
  stays at or under the target, with the one-sided 95 % Clopper-Pearson upper bound of the
  rate (not the rate itself) under the target, so that a test set of the same kind stays
  under it too. Pairs of two training drugs and pairs with a drug the model never saw get
  their own threshold, each from validation negatives of their kind.
- Applicability domain: a pair is inside when at least one drug has a reference (training)
  drug with Tanimoto similarity >= `cut_off`; the cut-off is the lowest similarity down to
  which validation pairs of unseen drugs, band by band, still rank interactions above
  negatives with AUROC >= the configured minimum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax
from scipy.stats import beta
from sklearn.metrics import roc_auc_score

from clinassist.training.calibration import binary_nll


@dataclass(frozen=True)
class Platt:
    scale: float
    bias: float

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.scale * logits + self.bias)))


def fit_platt(logits: np.ndarray, targets: np.ndarray) -> Platt:
    result = minimize(lambda p: binary_nll(p[0] * logits + p[1], targets), x0=[1.0, 0.0],
                      method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9})
    return Platt(float(result.x[0]), float(result.x[1]))


def multiclass_nll(logits: np.ndarray, classes: np.ndarray) -> float:
    return float(-np.mean(log_softmax(logits, axis=1)[np.arange(len(classes)), classes]))


def fit_type_temperature(logits: np.ndarray, classes: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T)."""
    result = minimize_scalar(lambda log_t: multiclass_nll(logits / np.exp(log_t), classes),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def false_alarm_upper_bound(alarms: int, negatives: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a binomial rate."""
    if alarms >= negatives:
        return 1.0
    return float(beta.ppf(confidence, alarms + 1, negatives - alarms))


@dataclass(frozen=True)
class Threshold:
    value: float
    target_false_alarm: float
    validation_false_alarm: float
    validation_false_alarm_upper95: float
    validation_sensitivity: float
    validation_negatives: int

    def to_json(self) -> dict:
        return asdict(self)


def threshold_for_false_alarm(probabilities: np.ndarray, targets: np.ndarray,
                              target: float) -> Threshold:
    """The lowest threshold t (alert when p >= t) whose false-alarm upper bound <= target."""
    negatives = np.sort(probabilities[targets == 0])[::-1]
    if len(negatives) == 0:
        raise ValueError("choosing a false-alarm threshold needs validation negatives")
    alarms = 0
    while alarms < len(negatives) and false_alarm_upper_bound(alarms + 1, len(negatives)) <= target:
        alarms += 1
    # flag fewer than `alarms + 1` negatives: the threshold sits just above the next one
    value = float(np.nextafter(negatives[alarms], 1.0)) if alarms < len(negatives) else 0.0
    flagged = probabilities >= value
    return Threshold(value, target, float(flagged[targets == 0].mean()),
                     false_alarm_upper_bound(int(flagged[targets == 0].sum()), len(negatives)),
                     float(flagged[targets == 1].mean()) if (targets == 1).any() else 0.0,
                     len(negatives))


@dataclass(frozen=True)
class Domain:
    cut_off: float  # a pair is inside when max(nearest similarity of its drugs) >= cut_off
    minimum_auroc: float
    validation_pairs_inside: float

    def to_json(self) -> dict:
        return asdict(self)


def applicability_cut_off(nearest: np.ndarray, probabilities: np.ndarray, targets: np.ndarray,
                          minimum_auroc: float, candidates: np.ndarray,
                          minimum_pairs: int = 100) -> Domain:
    """Walking down the candidate cut-offs, each band of validation pairs between a candidate
    and the last accepted one (by the closer drug's nearest-reference similarity) must rank with
    AUROC >= `minimum_auroc`; a band with fewer than `minimum_pairs` of either class is pooled
    with the next one down. The cut-off is the last candidate accepted: below it the model
    ranks no better than the minimum, so it abstains."""
    candidates = np.sort(candidates)
    chosen, upper = 1.0, np.inf  # no band passes: never answer for two drugs never seen
    for c in candidates[::-1]:
        band = (nearest >= c) & (nearest < upper)
        if min((targets[band] == 1).sum(), (targets[band] == 0).sum()) < minimum_pairs:
            continue  # too few pairs to judge: pooled with the next band down
        if roc_auc_score(targets[band], probabilities[band]) < minimum_auroc:
            break
        chosen, upper = float(c), c
    return Domain(chosen, minimum_auroc, float(np.mean(nearest >= chosen)))
