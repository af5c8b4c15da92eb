"""The committed bundle: metadata agrees with the ONNX file, and its metrics reproduce."""

import json

import numpy as np
import pytest

from clinassist.bundle import Bundle, file_sha256
from clinassist.training import cxr_data
from clinassist.training.cxr_evaluate import evaluate
from clinassist.training.bundle_metadata import records_sha256

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load("cxr_pneumonia")


@pytest.fixture(scope="module")
def fresh_evaluation(bundle):
    return evaluate(bundle)


def test_metadata_describes_the_onnx_file(bundle):
    meta = bundle.metadata
    assert meta["sha256"] == file_sha256(bundle.path / "model.onnx")
    (image,) = bundle.session.get_inputs()
    assert image.name == "image" and image.type == "tensor(float)"
    assert image.shape[1] == 1 and all(isinstance(d, str) for d in (image.shape[0], *image.shape[2:]))
    size = max(cfg["image_size"] for cfg in meta["training_configs"]) // 16
    assert meta["network_data_format"]["outputs"]["cam"]["shape"][2:] == [size, size]
    out = bundle.run(image=np.zeros((2, 1, 300, 260), np.float32) + np.arange(260, dtype=np.float32))
    assert out["probability"].shape == (2,) and out["cam"].shape == (2, 1, size, size)
    assert 0 < meta["operating_point"]["threshold"] < 1
    assert meta["calibration"]["temperature"] > 0
    assert meta["operating_point"]["validation"]["sensitivity_at_threshold"] >= 0.95


def test_metadata_hashes_the_training_data_it_was_built_from(bundle, records):
    data = bundle.metadata["training_data"]
    assert data["manifest_sha256"] == cxr_data.expected_manifest_sha256(cxr_data.dataset_root())
    (cfg, *_) = bundle.metadata["training_configs"]
    splits = cxr_data.make_splits(records, cfg["val_fraction"], cfg["seed"])
    assert data["split_sha256"]["train"] == records_sha256(splits.train)
    assert data["split_sha256"]["test"] == records_sha256(splits.test)
    assert data["licence"] == "CC BY 4.0"


def test_committed_metrics_reproduce(bundle, fresh_evaluation):
    committed = json.loads((bundle.path / "metrics.json").read_text())
    for name, entry in committed["metrics"].items():
        assert fresh_evaluation["metrics"][name]["value"] == pytest.approx(entry["value"], abs=1e-6)
        assert fresh_evaluation["metrics"][name]["ci95"] == pytest.approx(entry["ci95"], abs=1e-6)


def test_bundle_meets_the_triage_quality_bar(fresh_evaluation):
    """AUC >= 0.97 and accuracy >= 0.90 where the flag is decided (the operating point).
    Accuracy at 0.5 is 0.891, under 0.90; the model card reports it as a shortfall."""
    metrics = fresh_evaluation["metrics"]
    assert metrics["auc"]["value"] >= 0.97
    assert metrics["accuracy_at_threshold"]["value"] >= 0.90
    assert metrics["sensitivity_at_threshold"]["value"] >= 0.95


def test_bundle_is_small_enough_to_commit(bundle):
    assert sum(p.stat().st_size for p in bundle.path.iterdir()) < 20 * 1024 * 1024
