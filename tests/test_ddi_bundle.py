"""The committed interaction-model bundle: its metadata agrees with the ONNX graph and the data,
the drug table is what the encoder makes of each drug's structure, it fits the size budget,
and the committed metrics reproduce from the bundle (S1 and external validation)."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from clinassist.bundle import Bundle, file_sha256
from clinassist.serving.medication.predictor import read_names, read_table
from clinassist.training import ddi_data
from clinassist.training.ddi_bundle import BUNDLE_NAME, evaluate

MAX_BUNDLE_BYTES = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load(BUNDLE_NAME)


@pytest.fixture(scope="module")
def table(bundle):
    return read_table(bundle.path)


def test_metadata_matches_the_graph_and_the_data(bundle, table):
    meta = bundle.metadata
    rows = np.arange(5)
    first, second = np.array([0, 1, 2, 3]), np.array([1, 0, 4, 2])
    out = bundle.run(embeddings=table.embeddings[rows], neighbours=table.neighbours[rows],
                     similarity=table.similarity[rows], first=first, second=second)
    assert out["p_interaction"].shape == (4,) and ((0 <= out["p_interaction"])
                                                   & (out["p_interaction"] <= 1)).all()
    assert out["type_probabilities"].shape == (4, 86)
    assert np.allclose(out["type_probabilities"].sum(axis=1), 1, atol=1e-5)
    assert out["p_interaction"][0] == pytest.approx(out["p_interaction"][1], abs=1e-5)
    types = ddi_data.read_types(ddi_data.dataset_root())
    assert meta["classes"] == [{"label": t.label, "sentence": t.sentence,
                                "first_is_drug2": t.first_is_drug2} for t in types]
    benchmark = ddi_data.verify_files(ddi_data.dataset_root())
    for name, digest in benchmark.items():
        assert meta["training_data"]["sources"][f"{ddi_data.DATASET_FOLDER}/{name}"] == digest
    assert "NON-COMMERCIAL" in meta["licence"] and meta["commercial_use"] is False
    assert 0 < meta["threshold"]["value"] < 1
    assert meta["threshold"]["validation_false_alarm_upper95"] <= 0.05
    # 1: no band of two-unseen-drug pairs ranked well enough, so one drug must be a training drug
    assert 0 < meta["applicability_domain"]["cut_off"] <= 1


def test_the_bundle_fits_the_size_budget(bundle):
    assert sum(f.stat().st_size for f in bundle.path.iterdir()) < MAX_BUNDLE_BYTES


def test_drug_table_covers_drugbank86_and_names_resolve(bundle, table):
    assert table.keys[:1704] == ddi_data.load().drugs
    names = read_names(bundle.path)
    assert table.keys[names["warfarin"]] == "DB00682"
    assert table.keys[names["paracetamol"]] == table.keys[names["acetaminophen"]] == "DB00316"
    references = set(table.references.tolist())
    assert references == set(range(1704))  # S1: every DrugBank-86 drug is a training drug
    assert np.all(table.nearest_similarity[:1704] == 1)
    # outside DrugBank-86 a similarity of 1 is a fingerprint collision of homologues (11 of
    # 4,870: hexamethonium and decamethonium, fatty acids of other chain lengths)
    assert np.mean(table.nearest_similarity[1704:] < 1) > 0.99


def test_the_drug_table_is_what_the_encoder_makes_of_each_structure(bundle, table):
    """Features recomputed from the SMILES with the stored spec, through `encoder.onnx`."""
    pytest.importorskip("rdkit")
    from clinassist.training import ddi_features, ddi_sources

    meta = bundle.metadata
    assert file_sha256(bundle.path / meta["encoder_file"]) == meta["encoder_sha256"]
    sources = ddi_sources.load()
    spec = ddi_features.FeatureSpec(**meta["encoder_input"]["spec"])
    rows = np.r_[0:20, 1704:1724]
    features = ddi_features.features_for([sources.universe.drugs[r].smiles for r in rows],
                                         [sources.atc[r] for r in rows], spec)
    encoder = ort.InferenceSession(str(bundle.path / meta["encoder_file"]),
                                   providers=["CPUExecutionProvider"])
    embedded = encoder.run(["embeddings"], {"features": features})[0]
    assert np.allclose(embedded, table.embeddings[rows], atol=2e-2, rtol=1e-2)


def test_committed_metrics_reproduce_from_the_bundle(bundle):
    committed = json.loads((bundle.path / "metrics.json").read_text())
    fresh = evaluate(bundle)
    assert fresh["threshold"] == pytest.approx(committed["threshold"])
    for block in ("type", "existence", "existence_kb_silent", "degree_baseline"):
        for key, value in committed["splits"]["s1"][block].items():
            assert fresh["splits"]["s1"][block][key] == pytest.approx(value, abs=2e-3), key
    for group, scores in committed["external"].items():
        for key in ("auroc", "false_alarm_rate", "sensitivity"):
            assert fresh["external"][group]["all"][key] == pytest.approx(scores["all"][key],
                                                                         abs=2e-3)
