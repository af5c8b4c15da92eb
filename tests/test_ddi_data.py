"""DrugBank-86 loading and the project's splits: labels through `Interaction type`, drugs held
out as S2/S3 promise, and missing or altered data refused."""

import shutil

import numpy as np
import pytest

from clinassist.training import ddi_data
from clinassist.training.ddi_train import DEFAULT_CONFIG, load_config, split_of


@pytest.fixture(scope="module")
def data():
    return ddi_data.load()


@pytest.fixture(scope="module")
def cfg():
    return load_config(DEFAULT_CONFIG)


def type_of(data, first: str, second: str) -> ddi_data.InteractionType:
    index = {drug: i for i, drug in enumerate(data.drugs)}
    row = np.flatnonzero((data.pairs.first == index[first]) & (data.pairs.second == index[second]))
    assert len(row) == 1, (first, second)
    return data.types[data.pairs.classes[row[0]]]


def test_labels_map_through_the_interaction_type_column(data):
    """Known pairs (field guide and PROVENANCE checks): the `DDI type N` column would give
    other sentences."""
    assert [t.label for t in data.types] == list(range(1, 87))
    warfarin_aspirin = type_of(data, "DB00682", "DB00945")
    assert warfarin_aspirin.label == 6
    assert "increase the anticoagulant activities" in warfarin_aspirin.sentence
    simvastatin_clarithromycin = type_of(data, "DB00641", "DB01211")
    assert simvastatin_clarithromycin.label == 73
    assert "serum concentration of #Drug2 can be increased" in simvastatin_clarithromycin.sentence


def test_subject_column_says_which_drug_the_sentence_is_about(data):
    """midazolam, ketoconazole -> 73 is about midazolam (#Drug2); rifampicin, warfarin -> 4 is
    about warfarin (#Drug2 again, but now the second drug)."""
    assert type_of(data, "DB00683", "DB01026").first_is_drug2
    assert not type_of(data, "DB01045", "DB00682").first_is_drug2


def test_every_pair_has_fingerprintable_drugs(data):
    assert len(data.drugs) == 1704
    assert len(data.pairs) > 190_000
    assert data.pairs.classes.min() == 0 and data.pairs.classes.max() == 85


@pytest.mark.parametrize("name", ["s2", "s3"])
def test_cold_start_splits_hold_drugs_out(data, cfg, name):
    split = split_of(data, cfg, name)
    new = set(split.new_drugs.tolist())
    assert len(new) == len(data.drugs) // 5
    for part in (split.train, split.val):
        assert not new & set(part.first.tolist()) and not new & set(part.second.tolist())
    unseen = np.isin(split.test.first, split.new_drugs).astype(int) + np.isin(split.test.second,
                                                                              split.new_drugs)
    assert np.all(unseen == (1 if name == "s2" else 2))
    assert len(split.test) > 1000


def test_random_split_partitions_pairs_reproducibly(data, cfg):
    split, again = split_of(data, cfg, "s1"), split_of(data, cfg, "s1")
    assert len(split.train) + len(split.val) + len(split.test) == len(data.pairs)
    assert split.test.sha256() == again.test.sha256()
    assert abs(len(split.test) / len(data.pairs) - cfg["test_fraction"]) < 0.001


def test_missing_or_altered_data_is_refused(tmp_path):
    with pytest.raises(ddi_data.DdiDataError, match="not found"):
        ddi_data.load(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(ddi_data.dataset_root(), copy)
    (copy / ddi_data.TYPES_FILE).chmod(0o644)
    (copy / ddi_data.TYPES_FILE).write_text("Interaction type,Description\n")
    with pytest.raises(ddi_data.DdiDataError, match="SHA-256"):
        ddi_data.load(copy)
