"""The committed pixel-QC bundle: metadata agrees with the ONNX file, its held-out metrics
reproduce, and the synthetic classes are what their names say."""

import json

import numpy as np
import pytest

from clinassist.bundle import Bundle
from clinassist.training import qc_data
from clinassist.training.qc_bundle import evaluate


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load("qc_radiograph")


def test_metadata_matches_the_graph(bundle):
    assert bundle.metadata["classes"] == list(qc_data.QC_CLASSES)
    out = bundle.run(image=np.random.default_rng(0).random((3, 1, 123, 77), dtype=np.float32))
    assert out["probabilities"].shape == (3, len(qc_data.QC_CLASSES))
    assert np.allclose(out["probabilities"].sum(axis=1), 1, atol=1e-5)


def test_committed_held_out_metrics_reproduce_and_hold_the_card_claims(bundle):
    committed = json.loads((bundle.path / "metrics.json").read_text())
    fresh = evaluate(bundle)
    assert fresh["confusion"] == committed["confusion"]
    assert fresh["accept_reject_accuracy"] >= 0.99
    assert fresh["false_rejection_rate"] <= 0.02


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
