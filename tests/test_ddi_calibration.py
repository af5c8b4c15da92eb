"""Calibration, the false-alarm threshold and the applicability domain, on data whose answer is
known: logits drawn from a known model, scores whose ranking quality is set by construction."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clinassist.training.ddi_calibration import (
    applicability_cut_off,
    false_alarm_upper_bound,
    fit_platt,
    fit_type_temperature,
    threshold_for_false_alarm,
)


def test_platt_scaling_recovers_the_scale_and_bias_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 40_000)
    labels = (rng.random(40_000) < 1 / (1 + np.exp(-(0.4 * logits - 0.7)))).astype(int)
    platt = fit_platt(logits, labels)
    assert platt.scale == pytest.approx(0.4, abs=0.02)
    assert platt.bias == pytest.approx(-0.7, abs=0.04)
    # calibrated: in each decile of predicted probability the observed rate matches
    p = platt(logits)
    for low in np.arange(0, 1, 0.1):
        inside = (p >= low) & (p < low + 0.1)
        assert abs(labels[inside].mean() - p[inside].mean()) < 0.03


def test_type_temperature_recovers_the_temperature_that_generated_the_classes():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, (20_000, 86))
    scaled = np.exp(logits / 2.5)
    probabilities = scaled / scaled.sum(axis=1, keepdims=True)
    classes = np.array([rng.choice(86, p=row) for row in probabilities])
    assert fit_type_temperature(logits, classes) == pytest.approx(2.5, rel=0.05)


def test_threshold_keeps_the_false_alarm_upper_bound_under_the_target():
    rng = np.random.default_rng(2)
    negatives, positives = rng.beta(2, 5, 5000), rng.beta(5, 2, 5000)
    p = np.concatenate([negatives, positives])
    labels = np.concatenate([np.zeros(5000, int), np.ones(5000, int)])
    chosen = threshold_for_false_alarm(p, labels, 0.05)
    alarms = int((negatives >= chosen.value).sum())
    assert chosen.validation_false_alarm_upper95 <= 0.05
    assert chosen.validation_false_alarm == alarms / 5000 < 0.05
    # one more false alarm (the next lower threshold) would break the bound
    assert false_alarm_upper_bound(alarms + 1, 5000) > 0.05
    assert chosen.validation_sensitivity == pytest.approx((positives >= chosen.value).mean())


def test_a_tiny_validation_set_gets_a_stricter_threshold():
    rng = np.random.default_rng(3)
    many = rng.beta(2, 5, 20_000)
    few = many[:200]
    big = threshold_for_false_alarm(many, np.zeros(len(many), int), 0.05).value
    small = threshold_for_false_alarm(few, np.zeros(len(few), int), 0.05).value
    assert small > big


def test_applicability_cut_off_is_where_ranking_fails():
    """Pairs whose closer drug is less similar than 0.4 are scored at random; above it the
    scores rank well. The cut-off found is 0.4 and AUROC inside it is high."""
    rng = np.random.default_rng(4)
    nearest = rng.uniform(0.1, 1.0, 30_000)
    labels = rng.integers(0, 2, 30_000)
    informative = nearest >= 0.4
    scores = np.where(informative, labels * 0.6 + rng.random(30_000) * 0.5, rng.random(30_000))
    candidates = np.round(np.arange(0.2, 0.75, 0.05), 2)
    domain = applicability_cut_off(nearest, scores, labels, 0.7, candidates)
    assert domain.cut_off == pytest.approx(0.4)
    assert roc_auc_score(labels[nearest >= domain.cut_off], scores[nearest >= domain.cut_off]) > 0.9
    assert domain.validation_pairs_inside == pytest.approx((nearest >= 0.4).mean())
