"""The "no known interaction" pairs: listed by no source, drugs that every source knows well,
matched to the positives by degree so that degree alone cannot tell them apart, split like the
positives, and exactly the pairs the dataset card's manifest records."""

import json

import numpy as np
import pytest

from clinassist.training import ddi_data, ddi_external
from clinassist.training.ddi_evaluate import DegreeBaseline
from clinassist.training.ddi_manifest import FOLDER, manifest
from clinassist.training.ddi_negatives import keys_of, pair_keys
from clinassist.training.ddi_sources import unordered
from clinassist.training.ddi_train import DEFAULT_CONFIG, load_config, prepare, split_pairs

pytest.importorskip("rdkit")


@pytest.fixture(scope="module")
def cfg():
    return load_config(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def prepared(cfg):
    return prepare(cfg, with_features=False)


@pytest.fixture(scope="module")
def splits(prepared, cfg):
    return {name: split_pairs(prepared, cfg, name) for name in ddi_data.SPLITS}


def negatives_of(pairs):
    return pairs.take(np.flatnonzero(pairs.label == 0))


def test_no_negative_is_listed_by_any_source_in_either_order(prepared):
    task, listed = prepared.task, prepared.sources.listed
    negatives = negatives_of(task.pairs)
    assert len(negatives) > 50_000
    keys = negatives.keys()  # order-free
    assert not np.isin(keys, keys_of(listed.generous)).any()
    assert not np.isin(keys, keys_of(listed.drugbank86 | listed.ddinter | listed.ansm)).any()
    assert len(np.unique(keys)) == len(keys)
    positives = task.pairs.take(np.flatnonzero(task.pairs.label == 1))
    assert not np.isin(keys, positives.keys()).any()


def test_positives_are_listed_pairs_and_only_drugbank86_ones_have_a_type(prepared):
    task, listed = prepared.task, prepared.sources.listed
    positives = task.pairs.take(np.flatnonzero(task.pairs.label == 1))
    typed = positives.classes >= 0
    assert np.isin(positives.keys()[typed], keys_of(listed.drugbank86)).all()
    assert not np.isin(positives.keys()[~typed], keys_of(listed.drugbank86)).any()
    assert np.isin(positives.keys()[~typed], keys_of(listed.ddinter | listed.ansm)).all()
    assert 0.5 < typed.mean() < 0.9


def test_a_pair_ddinter_lists_without_a_level_is_not_a_negative(prepared):
    """DDInter lists amoxicillin + acetaminophen with level `Unknown`: not a positive, but
    listed, so not a negative either."""
    universe, listed = prepared.sources.universe, prepared.sources.listed
    pair = unordered(universe.find("amoxicillin"), universe.find("paracetamol"))
    assert pair in listed.generous and pair not in listed.ddinter
    assert not np.isin(pair_keys(np.array([pair[0]]), np.array([pair[1]])),
                       prepared.task.pairs.keys()).any()


def test_negatives_are_pairs_of_well_known_drugbank86_drugs(prepared, cfg):
    task = prepared.task
    degrees = prepared.sources.listed.degrees(len(prepared.sources.universe))
    negatives = negatives_of(task.pairs)
    for rows in (negatives.first, negatives.second):
        assert prepared.sources.universe.drugbank86[rows].all()
        assert (degrees["union"][rows] >= cfg["negatives"]["min_degree_union"]).all()
        assert (degrees["drugbank86"][rows] >= cfg["negatives"]["min_degree_drugbank86"]).all()
        assert (degrees["ddinter"][rows] >= cfg["negatives"]["min_degree_ddinter"]).all()


def test_every_degree_cell_holds_one_negative_per_positive(prepared):
    task = prepared.task
    cells = task.cells.cell(task.pairs.first, task.pairs.second)
    for label in (0, 1):
        assert len(np.unique(cells[task.pairs.label == label])) > 100
    positive = np.bincount(cells[task.pairs.label == 1], minlength=cells.max() + 1)
    negative = np.bincount(cells[task.pairs.label == 0], minlength=cells.max() + 1)
    assert np.array_equal(positive, negative)


@pytest.mark.parametrize("name", ddi_data.SPLITS)
def test_degree_alone_cannot_separate_the_classes(prepared, splits, name):
    """The degree-only baseline, fitted on the training pairs, is near chance on the test
    pairs of every split (it is reported beside every result)."""
    pairs = splits[name]
    baseline = DegreeBaseline.fit(prepared.task.cells.union_degree, pairs.training_degree,
                                  pairs.binary[ddi_data.TRAIN])
    assert abs(baseline.scores(pairs.binary[ddi_data.TEST])["auroc"] - 0.5) < 0.05


def test_s1_parts_share_no_pair(splits):
    parts = [splits["s1"].binary[p].keys() for p in (ddi_data.TRAIN, ddi_data.VAL, ddi_data.TEST)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.isin(parts[i], parts[j]).any()
    test = splits["s1"].binary[ddi_data.TEST]
    assert 0.45 < test.label.mean() < 0.55  # the positives' and negatives' shares agree


@pytest.mark.parametrize("name", ["s2", "s3"])
def test_cold_start_negatives_follow_the_held_out_drugs(splits, name):
    split = splits[name].split
    parts = split.drug_parts(len(split.train.drugs))
    new_count = {"s2": 1, "s3": 2}[name]
    for part, rule in ((ddi_data.TRAIN, lambda a, b: (a == ddi_data.TRAIN) & (b == ddi_data.TRAIN)),
                       (ddi_data.VAL, lambda a, b: ((a == ddi_data.VAL) | (b == ddi_data.VAL))
                        & (a != ddi_data.TEST) & (b != ddi_data.TEST)),
                       (ddi_data.TEST, lambda a, b: ((a == ddi_data.TEST).astype(int)
                                                     + (b == ddi_data.TEST)) == new_count)):
        negatives = negatives_of(splits[name].binary[part])
        assert len(negatives) > 500
        assert rule(parts[negatives.first], parts[negatives.second]).all()
    if name == "s2":  # the other drug of an S2 test pair is a training drug
        test = negatives_of(splits[name].binary[ddi_data.TEST])
        other = np.where(parts[test.first] == ddi_data.TEST, parts[test.second], parts[test.first])
        assert (other == ddi_data.TRAIN).all()


def test_external_pairs_are_held_out_and_of_the_right_drugs(prepared, splits, cfg):
    groups = ddi_external.external_sets(prepared, splits["s1"].binary, cfg)
    in_db86 = prepared.sources.universe.drugbank86
    listed = prepared.sources.listed
    training = splits["s1"].binary[ddi_data.TRAIN].keys()
    for group, unseen in (("new_pairs", 0), ("one_unseen", 1), ("both_unseen", 2)):
        for part, pairs in groups[group].items():
            assert len(pairs) > 100 and 0.45 < pairs.label.mean() < 0.55
            assert ((~in_db86[pairs.first]).astype(int) + ~in_db86[pairs.second] == unseen).all()
            assert not np.isin(pairs.keys(), training).any()
            positives = pairs.take(np.flatnonzero(pairs.label == 1)).keys()
            assert not np.isin(positives, keys_of(listed.drugbank86)).any()
            assert np.isin(positives, keys_of(listed.ddinter | listed.ansm)).all()
    for group in ("one_unseen", "both_unseen"):  # validation and test drugs never meet
        outside = lambda p: set(p.first[~in_db86[p.first]]) | set(p.second[~in_db86[p.second]])
        assert not outside(groups[group][ddi_data.VAL]) & outside(groups[group][ddi_data.TEST])


def test_the_dataset_card_manifest_is_what_the_code_builds(prepared, cfg):
    committed = json.loads((FOLDER / "manifest.json").read_text())
    assert manifest(prepared, cfg) == committed
