"""The promotion gate's rule: better on the site (DeLong, one-sided), not worse beyond the stated
margins anywhere; a model fine-tuned under another held-out rule is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clinassist.bundle import Bundle
from clinassist.training.cxr_gate import (ALPHA, MARGINS, Comparison, GateError, GateReport,
                                          ModelUnderTest, check_site_split, decide,
                                          stratified_subset)
from clinassist.training.cxr_populations import LabelledImages
from clinassist.training.paired_tests import PairedDifference

BUNDLE = Path("models/cxr_pneumonia")


def difference(metric: str, diff: float, lower: float, p: float = 0.5) -> PairedDifference:
    return PairedDifference(metric, "test", 0.8 + diff, 0.8, diff, lower, p)


def comparison(name: str, auc=(0.0, -0.01, 0.5), sensitivity=(0.0, -0.01),
               specificity=(0.0, -0.01)) -> Comparison:
    return Comparison(name, name, 100, 50, 100, difference("auc", *auc),
                      difference("sensitivity", *sensitivity),
                      difference("specificity", *specificity))


def better_on_site() -> Comparison:
    return comparison("site", auc=(0.05, 0.01, ALPHA / 5))


def test_better_on_site_and_within_the_margins_elsewhere_passes():
    assert decide([better_on_site(), comparison("paediatric"), comparison("adult")]) == []


def test_not_shown_better_on_site_fails_even_with_a_higher_auc():
    (reason,) = decide([comparison("site", auc=(0.03, -0.004, 0.08)), comparison("adult")])
    assert reason.startswith("site: the candidate is not shown better") and "p = 0.080" in reason


@pytest.mark.parametrize("metric", list(MARGINS))
def test_a_lower_bound_past_the_margin_fails_wherever_it_is(metric):
    bound = -MARGINS[metric] - 0.001
    worse = comparison("adult", **{metric: (-0.005, bound) if metric != "auc" else
                                   (-0.005, bound, 0.7)})
    (reason,) = decide([better_on_site(), comparison("paediatric"), worse])
    assert reason.startswith(f"adult: the candidate's {metric} may be lower by more than "
                             f"{MARGINS[metric]}")
    inside = comparison("adult", **{metric: (-0.005, -MARGINS[metric] + 0.001) if metric != "auc"
                                    else (-0.005, -MARGINS[metric] + 0.001, 0.7)})
    assert decide([better_on_site(), inside]) == []


def test_without_site_data_the_candidate_cannot_pass():
    (reason,) = decide([comparison("paediatric"), comparison("adult")])
    assert reason.startswith("no site data")


def test_the_report_states_the_rule_and_its_figures(tmp_path):
    model = ModelUnderTest("cxr_pneumonia", "9.9.9", "ab" * 32, "bundle")
    report = GateReport(model, model, [better_on_site()], [], public_limit=40)
    written = json.loads(report.write(tmp_path).read_text())
    assert written["passed"] is True and written["public_images_per_population"] == 40
    assert written["rule"]["not_worse"]["sensitivity"].endswith("> -0.03")
    assert written["comparisons"][0]["auc"]["p_candidate_better"] == ALPHA / 5


def test_a_model_fine_tuned_under_another_held_out_rule_is_refused(tmp_path):
    bundle = Bundle.load(BUNDLE)
    check_site_split(bundle)  # the committed bundle: no site data
    meta = {**bundle.metadata, "training_configs": [
        {**bundle.metadata["training_configs"][0],
         "site_data": [{"split_seed": "another", "held_out_fraction": 0.3}]}]}
    with pytest.raises(GateError, match="split by another rule"):
        check_site_split(Bundle(bundle.path, meta, bundle.session))


def test_a_limited_public_set_keeps_its_class_shares():
    targets = np.array([1] * 60 + [0] * 40)
    images = LabelledImages("adult", "test", np.zeros((100, 2, 2)), targets, np.arange(100))
    chosen = stratified_subset(images, 20)
    assert len(chosen) == 20 and targets[chosen].sum() == 12
    assert len(stratified_subset(images, None)) == 100
