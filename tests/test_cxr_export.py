import json
import shutil

import pytest

from clinassist.bundle import Bundle, BundleError
import torch

from clinassist.training.cxr_export import (PARITY_TOLERANCE, ExportError, calibrate,
                                            check_parity, export, load_ensemble)
from clinassist.training.cxr_model import ExportedCxr


@pytest.fixture(scope="module")
def tiny_bundle(tiny_run, tmp_path_factory):
    bundle = tmp_path_factory.mktemp("bundle")
    export([tiny_run], bundle, "0.0.1")
    return bundle


def temperatures(meta: dict) -> list[float]:
    return [point["temperature"] for point in meta["populations"].values()]


def test_export_matches_pytorch_on_real_test_images(tiny_run, tiny_bundle):
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    assert meta["export_parity_max_abs_diff"] <= PARITY_TOLERANCE
    ensemble, _ = load_ensemble([tiny_run])
    model = ExportedCxr(ensemble).eval()
    assert check_parity(model, tiny_bundle / "model.onnx", temperatures(meta)) <= PARITY_TOLERANCE


def test_parity_check_catches_a_graph_that_differs(tiny_run, tiny_bundle):
    ensemble, _ = load_ensemble([tiny_run])
    with torch.no_grad():
        ensemble.members[0].backbone.fc.bias += 0.5
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    with pytest.raises(ExportError, match="differ"):
        check_parity(ExportedCxr(ensemble).eval(), tiny_bundle / "model.onnx", temperatures(meta))


def test_each_population_gets_its_own_validation_fitted_operating_point(tiny_bundle):
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    points = meta["populations"]
    assert set(points) == {"paediatric", "adult"}
    assert points["paediatric"]["validation"]["images"] == 652
    assert points["adult"]["validation"]["images"] == 172  # the adults among the validation patients
    for point in points.values():
        assert point["temperature"] > 0 and 0 < point["threshold"] < 1
        assert point["validation"]["sensitivity_at_threshold"] >= 0.90
    assert meta["population_rule"] == {**meta["population_rule"],
                                       "paediatric_below_years": 18, "unknown_age": "adult"}


def test_export_is_one_file_with_no_external_data(tiny_bundle):
    assert sorted(p.name for p in tiny_bundle.iterdir()) == ["metadata.json", "model.onnx"]


def test_bundle_refuses_a_model_file_that_does_not_match_its_hash(tiny_bundle, tmp_path):
    for name in ("metadata.json", "model.onnx"):
        (tmp_path / name).write_bytes((tiny_bundle / name).read_bytes())
    with open(tmp_path / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(tmp_path)


def test_bundle_refuses_metadata_that_misnames_an_output(tiny_bundle, tmp_path):
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    outputs = meta["network_data_format"]["outputs"]
    outputs["heatmap"] = outputs.pop("cam")
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / "model.onnx").write_bytes((tiny_bundle / "model.onnx").read_bytes())
    with pytest.raises(BundleError, match="ONNX graph has"):
        Bundle.load(tmp_path)


def test_an_ensemble_bundle_has_one_member_per_run_and_the_finest_activation_grid(tiny_run,
                                                                                  tmp_path):
    meta = export([tiny_run, tiny_run], tmp_path, "0.0.2")
    assert meta["ensemble"]["members"] == 2 and len(meta["training_configs"]) == 2
    assert meta["export_parity_max_abs_diff"] <= PARITY_TOLERANCE
    size = meta["training_configs"][0]["image_size"] // 16
    assert meta["network_data_format"]["outputs"]["cam"]["shape"] == ["batch", 1, size, size]


def test_runs_on_different_validation_splits_cannot_form_an_ensemble(tiny_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_run / "final", other / "final")
    config = other / "final" / "config.yaml"
    config.write_text(config.read_text().replace("seed:", "seed: 1 #"))
    with pytest.raises(ExportError, match="validation splits"):
        load_ensemble([tiny_run, other])


def test_compare_scores_a_run_as_calibration_does_and_its_ensembles_too(tiny_run):
    from clinassist.training.cxr_compare import compare

    rows = compare([tiny_run, tiny_run])
    alone = [row for row in rows if len(row["runs"]) == 1]
    assert len(rows) == 3 and len(alone) == 2
    points = calibrate([tiny_run])
    expected = sum(p["validation"]["nll_after"] for p in points.values()) / len(points)
    for row in rows:  # a run averaged with itself is that run
        assert row["nll_after_temperature"] == pytest.approx(expected, rel=1e-6)
    assert sum(row["chosen"] for row in rows) == 1


def test_the_compare_command_prints_the_ranking_as_json(tiny_run, capsys):
    from clinassist.cli import main

    assert main(["compare", "cxr", "--run", str(tiny_run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["runs"] for row in rows] == [[str(tiny_run)]]
    assert rows[0]["chosen"] and 0 < rows[0]["weights_mb"] < 20
