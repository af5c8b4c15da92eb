"""Ranking candidate bundles on validation: known logits, known winner."""

import numpy as np
import pytest

from clinassist.training.cxr_compare import format_table, rank_candidates
from clinassist.training.cxr_train import ValidationGroups

TARGETS = np.array([1, 1, 1, 1, 0, 0, 0, 0])
ONE_POPULATION = ValidationGroups(np.full(8, "paediatric"), np.full(8, ""))


def one_population(logits: list[np.ndarray]) -> tuple[dict, dict]:
    return {"paediatric": logits}, {"paediatric": TARGETS}


def test_complementary_members_make_the_best_candidate_when_it_fits():
    # Each member is confidently wrong on a different case; their mean is right on all.
    first = np.array([4.0, 4.0, 4.0, -1.0, -4.0, -4.0, -4.0, -4.0])
    second = np.array([4.0, 4.0, 4.0, 4.0, -4.0, -4.0, -4.0, 1.0])
    rows = rank_candidates(*one_population([first, second]), ["a", "b"], [6.0, 6.0],
                           ONE_POPULATION)
    assert [row["runs"] for row in rows][0] == ["a", "b"]
    assert rows[0]["chosen"] and sum(row["chosen"] for row in rows) == 1
    assert rows[0]["errors_at_0.5"] == {"paediatric": 0}
    assert {row["errors_at_0.5"]["paediatric"] for row in rows[1:]} == {1}
    assert rows[0]["weights_mb"] == 12.0
    assert rows[0]["worst_auc"] == rows[1]["worst_auc"] == 1.0  # the NLL breaks the tie


def test_a_candidate_over_the_size_limit_is_ranked_but_not_chosen():
    targets = np.tile(TARGETS, 2)  # one error in 16 still meets the paediatric goal
    first, second = np.where(targets == 1, 4.0, -4.0), np.where(targets == 1, 4.0, -4.0)
    first[3], second[15] = -1.0, 1.0
    rows = rank_candidates({"paediatric": [first, second]}, {"paediatric": targets},
                           ["a", "b"], [12.0, 9.0],
                           ValidationGroups(np.full(16, "paediatric"), np.full(16, "")))
    assert rows[0]["runs"] == ["a", "b"] and not rows[0]["chosen"]
    chosen = [row for row in rows if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["weights_mb"] <= 20.0
    assert chosen[0] is rows[1]


def test_every_subset_is_a_candidate_and_the_table_marks_the_choice():
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=8) + 3 * (TARGETS - 0.5) for _ in range(3)]
    rows = rank_candidates(*one_population(logits), ["a", "b", "c"], [5.0, 5.0, 5.0],
                           ONE_POPULATION)
    assert len(rows) == 7
    assert sorted(len(row["runs"]) for row in rows) == [1, 1, 1, 2, 2, 2, 3]
    table = format_table(rows).splitlines()
    assert len(table) == 8 and sum("*" in line for line in table[1:]) == 1


def test_a_lone_member_is_scored_exactly_as_calibration_scores_it():
    from clinassist.training import calibration

    logits = np.array([2.0, 0.5, 3.0, -0.2, -1.0, 0.3, -2.5, -0.7])
    row, = rank_candidates(*one_population([logits]), ["a"], [5.0], ONE_POPULATION)
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
                           {"paediatric": TARGETS, "adult": adult_targets}, ["a"], [5.0],
                           ValidationGroups(np.array(["paediatric"] * 8 + ["adult"] * 6),
                                            np.array([""] * 8 + ["AP", "AP", "AP", "PA", "PA", "PA"])))
    each = {name: calibration.binary_nll(x / calibration.fit_temperature(x, y), y)
            for name, x, y in (("paediatric", child, TARGETS), ("adult", adult, adult_targets))}
    assert row["nll_by_population"] == pytest.approx(each)
    assert row["nll_after_temperature"] == pytest.approx((each["paediatric"] + each["adult"]) / 2)


ADULT_TARGETS = np.array([1, 1, 0, 0, 1, 1, 0, 0])
TWO_POPULATIONS = ValidationGroups(np.array(["paediatric"] * 8 + ["adult"] * 8),
                                   np.array([""] * 8 + ["AP"] * 4 + ["PA"] * 4))


def test_the_worst_group_decides_before_the_mean_nll():
    """`sharp` is near perfect on the children and on adult PA views but ranks adult AP views
    backwards; `even` is imperfect everywhere. The worst group, not the mean NLL, picks."""
    sharp = {"paediatric": np.array([9.0, 9, 9, 9, -9, -9, -9, -9]),
             "adult": np.array([-1.0, -1, 1, 1, 3, 3, -3, -3])}
    even = {"paediatric": np.array([1.0, 1, 1, 0.5, -1, -1, -1, -0.5]),
            "adult": np.array([1.0, -0.5, 0.5, -1, 1, -0.5, 0.5, -1])}
    rows = rank_candidates({p: [sharp[p], even[p]] for p in sharp},
                           {"paediatric": TARGETS, "adult": ADULT_TARGETS}, ["sharp", "even"],
                           [5.0, 5.0], TWO_POPULATIONS)
    by_runs = {tuple(row["runs"]): row for row in rows}
    assert by_runs[("sharp",)]["auc"]["adult_AP"] == 0.0 and by_runs[("sharp",)]["worst_auc"] == 0.0
    assert by_runs[("even",)]["worst_auc"] == 0.75
    assert (by_runs[("sharp",)]["nll_after_temperature"]
            < by_runs[("even",)]["nll_after_temperature"])
    chosen, = [row for row in rows if row["chosen"]]
    assert chosen["worst_auc"] == max(row["worst_auc"] for row in rows)
    assert chosen["runs"] != ["sharp"]


def test_a_candidate_under_the_paediatric_accuracy_goal_is_not_shipped():
    """`shifted` ranks every group perfectly but calls every child positive at 0.5."""
    shifted = {"paediatric": np.array([9.0, 9, 9, 9, 5, 5, 5, 5]),
               "adult": np.array([2.0, 2, -2, -2, 2, 2, -2, -2])}
    modest = {"paediatric": np.array([1.0, 1, 1, 0.5, -1, -1, -1, -2]),
              "adult": np.array([1.0, -0.5, 0.5, -1, 1, 0.2, 0.5, -1])}
    rows = rank_candidates({p: [shifted[p], modest[p]] for p in shifted},
                           {"paediatric": TARGETS, "adult": ADULT_TARGETS},
                           ["shifted", "modest"], [5.0, 5.0], TWO_POPULATIONS)
    alone = next(row for row in rows if row["runs"] == ["shifted"])
    assert alone["worst_auc"] == 1.0 == max(row["worst_auc"] for row in rows)
    assert alone["errors_at_0.5"]["paediatric"] == 4 and not alone["eligible"]
    chosen, = [row for row in rows if row["chosen"]]
    assert chosen["runs"] == ["modest"] and chosen["eligible"]
    assert sum("-shifted" in line for line in format_table(rows).splitlines()) == 2
