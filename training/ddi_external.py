"""External validation: interactions that DDInter or the ANSM thesaurus list and DrugBank-86
does not, against negatives the model has never seen, in three groups:

- `new_pairs`: both drugs are DrugBank-86 drugs and only DDInter or ANSM lists the pair: the
  S1 validation and test pairs of that kind (the model trains on the other sources' pairs
  too, never on these), against the S1 negatives of the same part;
- `one_unseen`: one DrugBank-86 drug and one drug outside DrugBank-86;
- `both_unseen`: two drugs outside DrugBank-86.

Drugs outside DrugBank-86 must be well known to DDInter (`negatives.min_degree_ddinter`
partners, and `min_degree_union` over the sources) for their silence to count, and are split
1:1 by drug into external-validation and external-test drugs; a pair of one group belongs to
the part of its outside drug(s) (a `both_unseen` pair with one drug of each is left out).
External-validation pairs set what only they can set (for drugs the model never saw: the
applicability-domain cut-off and the threshold); every figure reported is on external-test
pairs. Positives are DDInter pairs with a known level (not `Unknown`) and ANSM pairs; negatives
are pairs no source lists under any reading; both are matched by degree cell, one negative per
positive.
"""

from __future__ import annotations

import numpy as np

from clinassist.training import ddi_data
from clinassist.training.ddi_negatives import (
    LabelledPairs,
    NegativeConfig,
    keys_of,
    matched_sample,
    pair_keys,
)
from clinassist.training.ddi_train import Prepared

GROUPS = ("new_pairs", "one_unseen", "both_unseen")


def outside_drugs(prepared: Prepared, cfg: NegativeConfig) -> np.ndarray:
    """Universe rows of well-known drugs outside DrugBank-86."""
    sources = prepared.sources
    degrees = sources.listed.degrees(len(sources.universe))
    return np.flatnonzero(~sources.universe.drugbank86
                          & (degrees["ddinter"] >= cfg.min_degree_ddinter)
                          & (degrees["union"] >= cfg.min_degree_union))


def outside_parts(outside: np.ndarray, seed: int, drugs: int) -> np.ndarray:
    """Per universe drug: VAL or TEST for drugs outside DrugBank-86, UNUSED otherwise."""
    part = np.full(drugs, ddi_data.UNUSED)
    order = np.random.default_rng(seed).permutation(outside)
    part[order[: len(order) // 2]] = ddi_data.VAL
    part[order[len(order) // 2:]] = ddi_data.TEST
    return part


def matched(positive: tuple[np.ndarray, np.ndarray], negative: tuple[np.ndarray, np.ndarray],
            prepared: Prepared, rng: np.random.Generator) -> LabelledPairs:
    cells = prepared.task.cells
    keep_pos, keep_neg = matched_sample(cells.cell(*positive), cells.cell(*negative), 1.0, rng)
    ones, zeros = np.ones(len(keep_pos), np.int64), np.zeros(len(keep_neg), np.int64)
    return LabelledPairs(np.concatenate([positive[0][keep_pos], negative[0][keep_neg]]),
                         np.concatenate([positive[1][keep_pos], negative[1][keep_neg]]),
                         np.concatenate([ones, zeros]), np.full(len(ones) + len(zeros), -1))


def where(pairs: tuple[np.ndarray, np.ndarray], keep: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    return pairs[0][keep], pairs[1][keep]


def external_sets(prepared: Prepared, s1_pairs: dict[int, LabelledPairs],
                  cfg: dict) -> dict[str, dict[int, LabelledPairs]]:
    """Group -> part (VAL, TEST) -> matched pairs. `s1_pairs`: the S1 matched pairs per part
    (`new_pairs` is drawn from their validation and test parts)."""
    negative_cfg = NegativeConfig.of(cfg)
    sources = prepared.sources
    drugs = len(sources.universe)
    outside = outside_drugs(prepared, negative_cfg)
    part = outside_parts(outside, cfg["seed"] + 2, drugs)
    listed = sources.listed
    external_positive = keys_of((listed.ddinter | listed.ansm) - listed.drugbank86)
    generous = keys_of(listed.generous)
    rng = np.random.default_rng(cfg["seed"] + 3)
    seen = np.flatnonzero(prepared.task.known)
    result: dict[str, dict[int, LabelledPairs]] = {}

    def labelled(first: np.ndarray, second: np.ndarray) -> tuple[tuple, tuple]:
        keys = pair_keys(first, second)
        pos = np.isin(keys, external_positive)
        neg = ~np.isin(keys, generous)  # no source lists it under any reading
        return (first[pos], second[pos]), (first[neg], second[neg])

    # pairs of two DrugBank-86 drugs listed by DDInter or ANSM only: the held-out S1 parts
    result["new_pairs"] = {}
    for p in (ddi_data.VAL, ddi_data.TEST):
        pairs = s1_pairs[p]
        positives = pairs.take(np.flatnonzero((pairs.label == 1) & (pairs.classes < 0)))
        negatives = pairs.take(np.flatnonzero(pairs.label == 0))
        result["new_pairs"][p] = matched((positives.first, positives.second),
                                         (negatives.first, negatives.second), prepared, rng)
    # one drug outside DrugBank-86: the part of that drug
    a, b = np.repeat(seen, len(outside)), np.tile(outside, len(seen))
    positives, negatives = labelled(a, b)
    result["one_unseen"] = {p: matched(where(positives, part[positives[1]] == p),
                                       where(negatives, part[negatives[1]] == p), prepared, rng)
                            for p in (ddi_data.VAL, ddi_data.TEST)}
    # both drugs outside DrugBank-86, of the same part
    i, j = np.triu_indices(len(outside), k=1)
    same = part[outside[i]] == part[outside[j]]
    positives, negatives = labelled(outside[i][same], outside[j][same])
    result["both_unseen"] = {p: matched(where(positives, part[positives[0]] == p),
                                        where(negatives, part[negatives[0]] == p), prepared, rng)
                             for p in (ddi_data.VAL, ddi_data.TEST)}
    return result
