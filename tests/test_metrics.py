import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score, roc_curve

from clinassist.training import calibration, metrics

# Scores on a coarse grid, so ties within and across the classes are common (as in a bootstrap
# resample, which repeats patients), with both classes present.
labelled_scores = st.integers(2, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 8), min_size=n, max_size=n),
    st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < n)))


@settings(max_examples=300, deadline=None)
@given(labelled_scores)
def test_the_roc_curve_and_auc_are_scikit_learns_to_the_bit(case):
    p, y = np.array(case[0]) / 8, np.array(case[1])
    fpr, tpr, _ = roc_curve(y, p)
    ours = metrics.roc_points(p, y)
    assert np.array_equal(ours[0], fpr) and np.array_equal(ours[1], tpr)
    assert metrics.auc(p, y) == roc_auc_score(y, p)
    for sensitivity in (0.5, 0.9, 1.0):
        best = 1 - fpr[tpr >= sensitivity].min()
        assert metrics.specificity_at_sensitivity(p, y, sensitivity) == best


@pytest.mark.parametrize("targets", [[1, 1, 1], [0, 0, 0]])
def test_one_class_has_no_auc_and_no_specificity_at_sensitivity(targets):
    p, y = np.array([0.2, 0.7, 0.9]), np.array(targets)
    assert np.isnan(metrics.auc(p, y)) and np.isnan(metrics.specificity_at_sensitivity(p, y, 0.9))


def test_perfect_separation_gives_auc_one_and_full_sensitivity():
    p = np.array([0.1, 0.2, 0.8, 0.9])
    y = np.array([0, 0, 1, 1])
    values = {name: m(p, y) for name, m in metrics.binary_metrics(0.5).items()}
    assert values["auc"] == 1.0
    assert values["sensitivity_at_threshold"] == values["specificity_at_threshold"] == 1.0
    assert values["accuracy_at_0.5"] == 1.0


def test_expected_calibration_error_on_hand_computed_bins():
    # bin [0.2,0.267): mean p 0.25, observed 0.5 -> |0.25|; bin [0.733,0.8): p 0.75, observed 1
    p = np.array([0.25, 0.25, 0.75, 0.75])
    y = np.array([0, 1, 1, 1])
    assert metrics.expected_calibration_error(p, y) == pytest.approx(0.25)
    assert metrics.expected_calibration_error(np.array([0.0, 1.0]), np.array([0, 1])) == 0.0


def test_confusion_counts():
    p = np.array([0.9, 0.6, 0.4, 0.1, 0.7])
    y = np.array([1, 0, 1, 0, 1])
    assert metrics.confusion(p, y, 0.5) == {"tp": 2, "fp": 1, "tn": 1, "fn": 1}


def test_bootstrap_interval_brackets_the_value_and_is_seeded():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p = np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1)
    first = metrics.with_bootstrap({"auc": metrics.binary_metrics(0.5)["auc"]}, p, y, 300, seed=3)
    again = metrics.with_bootstrap({"auc": metrics.binary_metrics(0.5)["auc"]}, p, y, 300, seed=3)
    low, high = first["auc"]["ci95"]
    assert low < first["auc"]["value"] < high and high - low < 0.1
    assert first == again


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < calibration.sigmoid(true_logits)).astype(int)
    assert calibration.fit_temperature(true_logits * 3.0, y) == pytest.approx(3.0, rel=0.05)


def test_threshold_keeps_the_sensitivity_target():
    p = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    t = calibration.threshold_for_sensitivity(p, y, 0.9)
    assert t == 0.2
    assert metrics.sensitivity(p, y, t) >= 0.9 > metrics.sensitivity(p, y, t + 1e-9)
