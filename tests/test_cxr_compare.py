"""Ranking candidate bundles on validation: known logits, known winner."""

import numpy as np
import pytest

from clinassist.training.cxr_compare import format_table, rank_candidates

TARGETS = np.array([1, 1, 1, 1, 0, 0, 0, 0])


def one_population(logits: list[np.ndarray]) -> tuple[dict, dict]:
    return {"paediatric": logits}, {"paediatric": TARGETS}


def test_complementary_members_make_the_best_candidate_when_it_fits():
    # Each member is confidently wrong on a different case; their mean is right on all.
    first = np.array([4.0, 4.0, 4.0, -1.0, -4.0, -4.0, -4.0, -4.0])
    second = np.array([4.0, 4.0, 4.0, 4.0, -4.0, -4.0, -4.0, 1.0])
    rows = rank_candidates(*one_population([first, second]), ["a", "b"], [6.0, 6.0])
    assert [row["runs"] for row in rows][0] == ["a", "b"]
    assert rows[0]["chosen"] and sum(row["chosen"] for row in rows) == 1
    assert rows[0]["errors_at_0.5"] == {"paediatric": 0}
    assert {row["errors_at_0.5"]["paediatric"] for row in rows[1:]} == {1}
    assert rows[0]["weights_mb"] == 12.0
    assert [r["nll_after_temperature"] for r in rows] == sorted(r["nll_after_temperature"]
                                                                for r in rows)


def test_a_candidate_over_the_size_limit_is_ranked_but_not_chosen():
    first = np.array([4.0, 4.0, 4.0, -1.0, -4.0, -4.0, -4.0, -4.0])
    second = np.array([4.0, 4.0, 4.0, 4.0, -4.0, -4.0, -4.0, 1.0])
    rows = rank_candidates(*one_population([first, second]), ["a", "b"], [12.0, 9.0])
    assert rows[0]["runs"] == ["a", "b"] and not rows[0]["chosen"]
    chosen = [row for row in rows if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["weights_mb"] <= 20.0
    assert chosen[0] is rows[1]


def test_every_subset_is_a_candidate_and_the_table_marks_the_choice():
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=8) + 3 * (TARGETS - 0.5) for _ in range(3)]
    rows = rank_candidates(*one_population(logits), ["a", "b", "c"], [5.0, 5.0, 5.0])
    assert len(rows) == 7
    assert sorted(len(row["runs"]) for row in rows) == [1, 1, 1, 2, 2, 2, 3]
    table = format_table(rows).splitlines()
    assert len(table) == 8 and sum("*" in line for line in table[1:]) == 1


def test_a_lone_member_is_scored_exactly_as_calibration_scores_it():
    from clinassist.training import calibration

    logits = np.array([2.0, 0.5, 3.0, -0.2, -1.0, 0.3, -2.5, -0.7])
    row, = rank_candidates(*one_population([logits]), ["a"], [5.0])
    temperature = calibration.fit_temperature(logits, TARGETS)
    assert row["nll_after_temperature"] == pytest.approx(
        calibration.binary_nll(logits / temperature, TARGETS))
    assert row["errors_at_0.5"] == {"paediatric": 2}


def test_the_rank_averages_the_populations_each_under_its_own_temperature():
    from clinassist.training import calibration

    adult_targets = np.array([1, 0, 1, 0, 1, 0])
    child, adult = np.array([3.0, 2.0, 2.5, 1.0, -2.0, -1.0, -3.0, -0.5]), \
        np.array([0.4, -0.1, 0.2, 0.3, 0.1, -0.4])
    row, = rank_candidates({"paediatric": [child], "adult": [adult]},
                           {"paediatric": TARGETS, "adult": adult_targets}, ["a"], [5.0])
    each = {name: calibration.binary_nll(x / calibration.fit_temperature(x, y), y)
            for name, x, y in (("paediatric", child, TARGETS), ("adult", adult, adult_targets))}
    assert row["nll_by_population"] == pytest.approx(each)
    assert row["nll_after_temperature"] == pytest.approx((each["paediatric"] + each["adult"]) / 2)
