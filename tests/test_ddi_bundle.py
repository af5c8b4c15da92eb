"""The committed interaction-model bundle: metadata agrees with the ONNX graph and the data,
the fingerprint table is the training one, and the committed metrics reproduce."""

import json

import numpy as np
import pytest

from clinassist.bundle import Bundle
from clinassist.training import ddi_data
from clinassist.training.ddi_bundle import BUNDLE_NAME, bundle_fingerprints, evaluate

MAX_BUNDLE_BYTES = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load(BUNDLE_NAME)


def test_metadata_matches_the_graph_and_the_data(bundle):
    meta = bundle.metadata
    bits = meta["network_data_format"]["inputs"]["drug1"]["shape"][1]
    fp = np.random.default_rng(0).integers(0, 2, (5, bits)).astype(np.float32)
    out = bundle.run(drug1=fp, drug2=fp[::-1].copy())["probabilities"]
    assert out.shape == (5, len(meta["classes"])) == (5, 86)
    assert np.allclose(out.sum(axis=1), 1, atol=1e-5)
    types = ddi_data.read_types(ddi_data.dataset_root())
    assert meta["classes"] == [{"label": t.label, "sentence": t.sentence,
                                "first_is_drug2": t.first_is_drug2} for t in types]
    assert meta["training_data"]["file_sha256"] == ddi_data.verify_files(ddi_data.dataset_root())
    assert "NON-COMMERCIAL" in meta["licence"] and meta["commercial_use"] is False
    assert 0 < meta["threshold"]["value"] < 1
    assert sum(f.stat().st_size for f in bundle.path.iterdir()) < MAX_BUNDLE_BYTES


def test_fingerprint_table_is_the_training_one(bundle):
    pytest.importorskip("rdkit")
    data = ddi_data.load()
    drugs, table = bundle_fingerprints(bundle)
    cfg = bundle.metadata["training_config"]
    sample = slice(0, 50)
    expected = ddi_data.morgan_fingerprints(data.smiles[sample], cfg["fingerprint_radius"],
                                            cfg["fingerprint_bits"])
    assert drugs == data.drugs
    assert np.array_equal(table[sample], expected)


def test_committed_s1_metrics_reproduce_from_the_bundle(bundle):
    committed = json.loads((bundle.path / "metrics.json").read_text())
    fresh = evaluate(bundle)
    assert fresh["threshold"] == pytest.approx(committed["threshold"])
    for key in ("pairs", "accuracy", "macro_f1", "cohen_kappa", "coverage_at_threshold"):
        assert fresh["splits"]["s1"][key] == pytest.approx(committed["splits"]["s1"][key], abs=1e-3)
