import json

import pytest

from clinassist.bundle import Bundle, BundleError
from training.cxr_export import PARITY_TOLERANCE, ExportError, check_parity, export
from training.cxr_model import CalibratedCxr
from training.cxr_train import load_trained


@pytest.fixture(scope="module")
def tiny_bundle(tiny_run, tmp_path_factory):
    bundle = tmp_path_factory.mktemp("bundle")
    export(tiny_run, bundle, "0.0.1")
    return bundle


def test_export_matches_pytorch_on_real_test_images(tiny_run, tiny_bundle):
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    assert meta["export_parity_max_abs_diff"] <= PARITY_TOLERANCE
    net, _ = load_trained(tiny_run)
    model = CalibratedCxr(net, meta["calibration"]["temperature"]).eval()
    assert check_parity(model, tiny_bundle / "model.onnx") <= PARITY_TOLERANCE


def test_parity_check_catches_a_graph_that_differs(tiny_run, tiny_bundle):
    net, _ = load_trained(tiny_run)
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    other = CalibratedCxr(net, meta["calibration"]["temperature"] * 0.5).eval()
    with pytest.raises(ExportError, match="differ"):
        check_parity(other, tiny_bundle / "model.onnx")


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
