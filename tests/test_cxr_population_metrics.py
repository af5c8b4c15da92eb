"""The per-population evaluation on inputs with known answers: AUC within each view and on the
ID-matched part, what the view alone scores, and a bootstrap that resamples whole patients."""

import numpy as np
import pytest

from clinassist.training import metrics
from clinassist.training.cxr_evaluate import population_metrics, view_only_auc
from clinassist.training.cxr_populations import LabelledImages

# Eight adults: within AP the model ranks perfectly, within PA backwards; positives are more
# often PA, so the view alone (PA = 1) scores above chance.
TARGETS = np.array([1, 1, 0, 0, 1, 0, 1, 0])
VIEWS = np.array(["AP", "AP", "AP", "AP", "PA", "PA", "PA", "AP"])
SCORES = np.array([0.9, 0.8, 0.2, 0.1, 0.3, 0.6, 0.4, 0.15])
ID_MATCHED = np.array([True, False, False, False, True, False, False, False])


def adults() -> LabelledImages:
    return LabelledImages("adult", "test", np.zeros((8, 2, 2)), TARGETS,
                          np.array([f"p{i // 2}" for i in range(8)]), VIEWS, ID_MATCHED)


def test_subgroup_aucs_use_only_their_images():
    chosen, masks = population_metrics(0.5, adults())
    values = {name: chosen[name](SCORES[masks[name]], TARGETS[masks[name]]) for name in masks}
    assert values["auc_AP"] == 1.0  # positives 0.9, 0.8 above negatives 0.2, 0.1, 0.15
    assert values["auc_PA"] == 0.0  # positives 0.3, 0.4 below the negative 0.6
    # ID-matched: the in-range positives (0.9, 0.3) against every negative
    assert values["auc_id_matched"] == pytest.approx(np.mean(
        [p > n for p in (0.9, 0.3) for n in (0.2, 0.1, 0.6, 0.15)]))


def test_the_view_alone_is_scored_as_a_model_would_be():
    # PA positives (2) above AP negatives (3): 6 pairs right; PA negative vs AP positives: 2
    # wrong; same-view pairs tie (AP: 2 x 3 = 6, PA: 2 x 1 = 2, each half right).
    expected = (6 + 0.5 * (6 + 2)) / (4 * 4)
    assert view_only_auc(adults()) == pytest.approx(expected)


def test_the_bootstrap_draws_whole_patients():
    patients = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
    targets = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    rng, resampler = np.random.default_rng(0), metrics.Resampler(targets, patients)
    for _ in range(50):
        drawn = resampler.draw(rng)
        counts = {p: int(np.sum(patients[drawn] == p)) for p in "abcd"}
        assert all(count % 2 == 0 for count in counts.values())  # both images or none
        # stratified: as many patients with a positive (a, c) as in the data
        assert (counts["a"] + counts["c"]) // 2 == 2 and (counts["b"] + counts["d"]) // 2 == 2
