"""The gate's paired tests: DeLong's test by Sun & Xu's fast algorithm agrees with the O(m n)
definition, holds its level under the null, and the paired bootstrap measures what it says."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clinassist.training.paired_tests import (Z_ONE_SIDED, delong, paired_bootstrap,
                                              structural_components)


def definition(positives: np.ndarray, negatives: np.ndarray):
    """DeLong et al. 1988 as written: psi(x, y) = 1 if x > y, 1/2 if equal, over all pairs."""
    above = positives[:, None] > negatives[None, :]
    psi = above + 0.5 * (positives[:, None] == negatives[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def definition_variance(targets, a, b) -> float:
    pos, neg = targets == 1, targets == 0
    _, v10a, v01a = definition(a[pos], a[neg])
    _, v10b, v01b = definition(b[pos], b[neg])
    s10, s01 = np.cov(np.vstack([v10a, v10b])), np.cov(np.vstack([v01a, v01b]))
    s = s10 / pos.sum() + s01 / neg.sum()
    return s[0, 0] + s[1, 1] - 2 * s[0, 1]


@pytest.fixture
def scores():
    rng = np.random.default_rng(7)
    targets = (rng.random(300) < 0.4).astype(int)
    latent = rng.normal(targets * 1.2, 1.0)
    a = np.round(latent + rng.normal(0, 0.3, 300), 1)  # rounded: many ties
    b = np.round(latent + rng.normal(0, 1.2, 300), 1)
    return targets, a, b


def test_structural_components_from_midranks_equal_the_pairwise_definition(scores):
    targets, a, _ = scores
    auc, v10, v01 = structural_components(a[targets == 1], a[targets == 0])
    expected_auc, expected_v10, expected_v01 = definition(a[targets == 1], a[targets == 0])
    assert auc == pytest.approx(expected_auc, abs=1e-12)
    assert auc == pytest.approx(roc_auc_score(targets, a), abs=1e-12)
    np.testing.assert_allclose(v10, expected_v10, atol=1e-12)
    np.testing.assert_allclose(v01, expected_v01, atol=1e-12)


def test_the_difference_and_its_bound_follow_delongs_variance(scores):
    targets, a, b = scores
    result = delong(targets, a, b)
    se = definition_variance(targets, a, b) ** 0.5
    assert result.difference == pytest.approx(roc_auc_score(targets, a) - roc_auc_score(targets, b))
    assert result.lower_95 == pytest.approx(result.difference - Z_ONE_SIDED * se, abs=1e-12)
    assert result.difference > 0 and result.p_candidate_better < 0.05  # less noise, better AUC
    assert delong(targets, b, a).p_candidate_better > 0.95


def test_under_the_null_the_test_rejects_about_five_percent_of_the_time():
    rng = np.random.default_rng(11)
    rejections = 0
    for _ in range(400):
        targets = (rng.random(120) < 0.5).astype(int)
        latent = rng.normal(targets, 1.0)
        a, b = latent + rng.normal(0, 0.7, 120), latent + rng.normal(0, 0.7, 120)
        rejections += delong(targets, a, b).p_candidate_better < 0.05
    assert 0.02 <= rejections / 400 <= 0.09


def test_identical_models_differ_by_exactly_nothing(scores):
    targets, a, _ = scores
    result = delong(targets, a, a.copy())
    assert (result.difference, result.lower_95, result.p_candidate_better) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="two positive and two negative"):
        delong(np.array([1, 0, 0]), np.array([0.9, 0.1, 0.2]), np.array([0.8, 0.2, 0.1]))


def test_the_paired_bootstrap_gives_each_models_rates_and_a_bound_below_the_difference():
    rng = np.random.default_rng(3)
    targets = np.repeat([1, 0], 100)
    patients = np.arange(200) // 2  # two images per patient
    production = rng.random(200) < np.where(targets == 1, 0.8, 0.2)
    candidate = production | ((targets == 1) & (rng.random(200) < 0.5))  # catches more
    result = paired_bootstrap(targets, candidate, production, patients, resamples=500)
    sens, spec = result["sensitivity"], result["specificity"]
    assert sens.candidate == np.mean(candidate[:100])
    assert sens.production == np.mean(production[:100])
    assert sens.difference > 0 and 0 < sens.lower_95 < sens.difference
    assert spec.difference == 0 and spec.lower_95 == 0  # no negative's flag changed
    same = paired_bootstrap(targets, production, production, patients, resamples=100)
    assert same["sensitivity"].lower_95 == 0 and same["sensitivity"].p_candidate_better == 1
