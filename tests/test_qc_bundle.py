"""The committed pixel-QC bundle: metadata agrees with the ONNX file, its held-out metrics
reproduce for both populations, good radiographs of children and adults are accepted and bad
ones caught, the real adult CR passes, and QC training never sees an adult test patient."""

import json

import numpy as np
import pytest
import torch

from clinassist.bundle import Bundle
from clinassist.serving.dicom.pixels import Limits, radiograph_pixels, read_instance
from clinassist.training import (bundle_metadata, cxr_data, nih_adult_data, qc_acceptance, qc_data,
                                 qc_train)
from clinassist.training.cxr_export import ExportError
from clinassist.training.cxr_populations import ADULT, PAEDIATRIC
from clinassist.training.qc_bundle import evaluate
from clinassist.training.qc_model import QcNet, QcProbabilities
from clinassist.training.trainer import load_config

from dicom_fixtures import real_cr

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's test files' VR notes

# Measured for 1.1.0 (metrics.json): 8 of the 248 NIH test radiographs rejected (3.2 %, 95 %
# Wilson interval 1.6-6.2 %), all called mirrored; the 3 % goal is just missed. 1.0.0 rejected
# 40.7 % (101 of 248). The bound guards against a retrained bundle doing worse.
ADULT_FALSE_REJECTION_BOUND = 0.035
KERMANY_FALSE_REJECTION_BOUND = 0.02  # 1.1.0: 0.5 % (3 of 624); 1.0.0: 1.3 % (8 of 624)


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load("qc_radiograph")


@pytest.fixture(scope="module")
def fresh(bundle):
    return evaluate(bundle)


def test_metadata_matches_the_graph(bundle):
    assert bundle.metadata["classes"] == list(qc_data.QC_CLASSES)
    out = bundle.run(image=np.random.default_rng(0).random((3, 1, 123, 77), dtype=np.float32))
    assert out["probabilities"].shape == (3, len(qc_data.QC_CLASSES))
    assert np.allclose(out["probabilities"].sum(axis=1), 1, atol=1e-5)


def test_metadata_hashes_both_populations_training_data(bundle):
    meta = bundle.metadata
    cfg = meta["training_config"]
    kermany = cxr_data.make_splits(cxr_data.read_manifest(), cfg["val_fraction"], cfg["seed"])
    adult = nih_adult_data.make_splits(nih_adult_data.read_manifest())
    assert meta["training_data"]["split_sha256"]["train"] == bundle_metadata.records_sha256(kermany.train)
    assert meta["adult_data"]["split_sha256"]["train"] == bundle_metadata.records_sha256(adult.train)
    assert meta["adult_data"]["split_sha256"]["test"] == bundle_metadata.records_sha256(adult.test)
    assert meta["adult_data"]["share_of_chest_items"] == cfg["adult_share"]
    assert "NIH Clinical Center" in meta["licence"]


def test_committed_held_out_metrics_reproduce(bundle, fresh):
    committed = json.loads((bundle.path / "metrics.json").read_text())
    assert committed["version"] == bundle.version
    assert fresh["confusion"] == committed["confusion"]
    for population in (PAEDIATRIC, ADULT):
        assert fresh["populations"][population] == committed["populations"][population]


def test_adult_radiographs_are_accepted(fresh):
    adult = fresh["populations"][ADULT]
    assert adult["radiographs"] == 248
    assert adult["false_rejection"]["rate"] <= ADULT_FALSE_REJECTION_BOUND
    assert adult["false_rejection_aged_18_plus"]["of"] == 233
    assert adult["false_rejection_aged_18_plus"]["rate"] <= ADULT_FALSE_REJECTION_BOUND


def test_kermany_false_rejection_stays_low(fresh):
    assert fresh["false_rejection_rate"] <= KERMANY_FALSE_REJECTION_BOUND
    assert fresh["populations"][PAEDIATRIC]["false_rejection"]["rate"] == fresh["false_rejection_rate"]
    assert fresh["accept_reject_accuracy"] >= 0.99


def test_mirrored_rotated_and_inverted_radiographs_are_caught_in_both_populations(fresh):
    for population in (PAEDIATRIC, ADULT):
        recall = fresh["populations"][population]["recall_per_class"]
        assert min(recall[name] for name in ("rotated_90", "rotated_180", "rotated_270",
                                             "inverted")) >= 0.99
        assert recall["flipped_left_right"] >= 0.96  # 1.1.0: children 0.995, adults 0.964
        assert fresh["populations"][population]["false_acceptance_rate"] <= 0.01


@pytest.mark.parametrize("name", ["RG1_UNCR", "RG1_J2KR", "RG1_J2KI"])
def test_the_real_adult_cr_is_accepted_and_its_mirror_is_not(bundle, name):
    pixels = radiograph_pixels(read_instance(real_cr(name), Limits()))
    both = np.stack([pixels, pixels[:, ::-1]])[:, None]
    probabilities = bundle.run(image=both)["probabilities"]
    assert [qc_data.QC_CLASSES[c] for c in probabilities.argmax(1)] == [
        "frontal_chest", "flipped_left_right"]


def test_qc_training_never_loads_a_test_image(monkeypatch):
    """Neither the adult NIH test patients nor the Kermany official test split reach QC
    training or checkpoint selection."""
    adult = nih_adult_data.make_splits(nih_adult_data.read_manifest())
    loaded_adults, loaded_children = [], []
    load_adults, load_children = nih_adult_data.load_pixels, cxr_data.load_pixels

    def recording_adults(records, *args, **kwargs):
        loaded_adults.extend(records)
        return load_adults(records, *args, **kwargs)

    def recording_children(records, *args, **kwargs):
        loaded_children.extend(records)
        return load_children(records, *args, **kwargs)

    monkeypatch.setattr(nih_adult_data, "load_pixels", recording_adults)
    monkeypatch.setattr(cxr_data, "load_pixels", recording_children)
    cfg = load_config(qc_train.DEFAULT_CONFIG)
    data = qc_train.prepare_data(cfg)
    patients = {r.patient_id for r in loaded_adults}
    assert patients == {r.patient_id for r in adult.train + adult.val}
    assert not patients & {r.patient_id for r in adult.test}
    assert {r.split for r in loaded_children} == {"train"}
    assert [pool.population for pool in data.train.pools] == [PAEDIATRIC, ADULT]
    assert set(data.val_population) == {PAEDIATRIC, ADULT}

    # The acceptance offset export fits sees the validation parts only.
    loaded_adults.clear(), loaded_children.clear()
    parts = qc_acceptance.validation_parts(cfg)
    assert {r.patient_id for r in loaded_adults} == {r.patient_id for r in adult.val}
    assert {r.split for r in loaded_children} == {"train"}  # Kermany validation is carved from it
    kermany = cxr_data.make_splits(cxr_data.read_manifest(), cfg["val_fraction"], cfg["seed"])
    assert loaded_children == kermany.val
    assert len(parts[ADULT].items) == qc_data.NOT_CHEST * len(adult.val)


def test_a_chest_item_draws_its_population_by_share():
    pools = [qc_data.ChestPool(PAEDIATRIC, np.zeros((50, 8, 8), np.float32), 0.75),
             qc_data.ChestPool(ADULT, np.ones((2, 8, 8), np.float32), 0.25)]
    dataset = qc_data.QcDataset(pools, [np.zeros((8, 8), np.float32)], 7000, seed=1, augment=False)
    adult = [dataset.image_and_class(i)[0].mean() == 1 for i in range(7000)
             if i % len(qc_data.QC_CLASSES) == qc_data.ACCEPTED_CLASS]
    assert np.mean(adult) == pytest.approx(0.25, abs=0.04)
    with pytest.raises(ValueError, match="sum to 1"):
        qc_data.QcDataset(pools[:1], [], 7, seed=1, augment=False)


def test_the_graph_offset_is_the_one_the_fit_assumes():
    net = QcNet(32).eval()
    pixels = np.random.default_rng(3).random((4, 1, 40, 36), dtype=np.float32)
    with torch.no_grad():
        plain = QcProbabilities(net).eval()(torch.from_numpy(pixels)).numpy()
        offset = QcProbabilities(net, 1.25).eval()(torch.from_numpy(pixels)).numpy()
    assert np.allclose(qc_acceptance.shifted(plain, 1.25), offset, atol=1e-6)
    assert (offset[:, qc_data.ACCEPTED_CLASS] > plain[:, qc_data.ACCEPTED_CLASS]).all()


def test_the_offset_is_the_smallest_that_meets_the_target_in_every_population():
    def scored(frontal_logits):
        """Good radiographs whose frontal logit is each value, against a mirrored logit of 0."""
        logits = np.full((len(frontal_logits), len(qc_data.QC_CLASSES)), -20.0)
        logits[:, qc_data.ACCEPTED_CLASS] = frontal_logits
        logits[:, qc_data.QC_CLASSES.index("flipped_left_right")] = 0.0
        probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return probabilities, np.zeros(len(frontal_logits), dtype=int)

    # 100 radiographs, 4 of them mirrored-looking: one at -0.2, three at -0.6 below the mirror.
    adult = scored(np.r_[np.full(96, 3.0), -0.2, -0.6, -0.6, -0.6])
    child = scored(np.full(50, 3.0))
    # At 0.25 three remain rejected (3 % meets the 3 % target); 0 leaves four.
    assert qc_acceptance.fit_offset({PAEDIATRIC: child, ADULT: adult}) == 0.25
    with pytest.raises(ExportError, match="no acceptance offset"):
        qc_acceptance.fit_offset({ADULT: scored(np.r_[np.full(90, 3.0), np.full(10, -4.0)])})


def test_the_bundle_carries_its_validation_offset(bundle):
    accepted = bundle.metadata["acceptance_offset"]
    assert accepted["logit_offset"] in accepted["grid"]
    for population in (PAEDIATRIC, ADULT):
        part = bundle.metadata["validation"][population]
        assert part["false_rejection"]["rate"] <= qc_acceptance.FALSE_REJECTION_TARGET
    if accepted["logit_offset"] > 0:  # the grid starts at 0: an offset was needed
        assert max(accepted["validation_false_rejection_without"].values()) > \
            qc_acceptance.FALSE_REJECTION_TARGET


def test_chest_variants_are_the_transformations_they_name():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    variant = {name: qc_data.chest_variant(image, i) for i, name in enumerate(qc_data.QC_CLASSES)
               if name != "not_chest_radiograph"}
    assert np.array_equal(variant["frontal_chest"], image)
    assert np.array_equal(variant["rotated_90"], np.rot90(image))
    assert np.array_equal(variant["rotated_180"], image[::-1, ::-1])
    assert np.array_equal(variant["flipped_left_right"], image[:, ::-1])
    assert np.array_equal(variant["inverted"], 11 - image)


def test_negative_files_are_split_by_file():
    assert not set(qc_data.NEGATIVE_FILES["train"]) & set(qc_data.NEGATIVE_FILES["test"])
