"""Calibrate a trained run on validation, export it to one ONNX file, and write the bundle."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from clinassist.bundle import file_sha256
from clinassist.errors import ClinassistError
from training import calibration, cxr_data
from training.cxr_model import CalibratedCxr, CxrNet
from training.cxr_train import load_trained
from training.metrics import expected_calibration_error, sensitivity, specificity

MIN_SENSITIVITY = 0.95
PARITY_TOLERANCE = 1e-4
OPSET = 18
BUNDLE_NAME = "cxr_pneumonia"


class ExportError(ClinassistError):
    """The exported graph disagrees with the PyTorch model."""


def logits_of(net: CxrNet, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([
            net.logit_and_cam(torch.from_numpy(pixels[i:i + batch_size]).float().unsqueeze(1))[0].numpy()
            for i in range(0, len(pixels), batch_size)
        ])


def calibrate(run: Path) -> dict:
    """Fit the temperature and the operating point on the run's validation split."""
    net, cfg = load_trained(run)
    splits = cxr_data.make_splits(cxr_data.read_manifest(), cfg["val_fraction"], cfg["seed"])
    targets = cxr_data.labels(splits.val)
    logits = logits_of(net, cxr_data.load_pixels(splits.val))
    temperature = calibration.fit_temperature(logits, targets)
    probabilities = calibration.sigmoid(logits / temperature)
    threshold = calibration.threshold_for_sensitivity(probabilities, targets, MIN_SENSITIVITY)
    result = {
        "temperature": temperature,
        "threshold": threshold,
        "criterion": f"highest threshold with sensitivity >= {MIN_SENSITIVITY} on validation",
        "validation": {
            "images": len(targets),
            "sensitivity_at_threshold": sensitivity(probabilities, targets, threshold),
            "specificity_at_threshold": specificity(probabilities, targets, threshold),
            "ece_before": expected_calibration_error(calibration.sigmoid(logits), targets),
            "ece_after": expected_calibration_error(probabilities, targets),
        },
    }
    (run / "calibration.json").write_text(json.dumps(result, indent=2))
    return result


def records_sha256(records: list[cxr_data.Record]) -> str:
    lines = sorted(f"{r.path},{r.md5},{r.label}" for r in records)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def export_onnx(model: CalibratedCxr, path: Path) -> None:
    from torch.export import Dim

    example = torch.rand(2, 1, 256, 224) * 4095
    dims = {0: Dim("batch"), 2: Dim("height", min=16), 3: Dim("width", min=16)}
    torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                      opset_version=OPSET, input_names=["image"],
                      output_names=["probability", "cam"], dynamic_shapes={"image": dims},
                      verbose=False)


def parity_images(count: int = 24) -> list[np.ndarray]:
    """Real test radiographs as exported inputs: 8-bit as stored, and rescaled to a 12-bit DICOM-like
    range at another size, so both the dynamic shape and the range invariance are exercised."""
    test = [r for r in cxr_data.read_manifest() if r.split == "test"]
    chosen = [test[i] for i in np.linspace(0, len(test) - 1, count).astype(int)]
    eight_bit = cxr_data.load_pixels(chosen).astype(np.float32)[:, None]
    twelve_bit = np.repeat(eight_bit[:4] * 16.0, 2, axis=2)[:, :, :, :200]
    return [eight_bit, twelve_bit]


def check_parity(model: CalibratedCxr, onnx_path: Path) -> float:
    """Largest |p_torch - p_onnx| over real test images; raises if above the tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in parity_images():
        with torch.no_grad():
            expected = model(torch.from_numpy(batch))[0].numpy()
        actual = session.run(["probability"], {"image": batch})[0]
        worst = max(worst, float(np.max(np.abs(expected - actual))))
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"ONNX and PyTorch probabilities differ by {worst:.2e} "
                          f"(tolerance {PARITY_TOLERANCE:.0e})")
    return worst


def metadata(cfg: dict, cal: dict, onnx_path: Path, version: str, parity: float) -> dict:
    import monai
    import onnxruntime

    records = cxr_data.read_manifest()
    splits = cxr_data.make_splits(records, cfg["val_fraction"], cfg["seed"])
    size, stride = cfg["image_size"], 16
    return {
        "name": BUNDLE_NAME,
        "version": version,
        "task": "binary classification: pneumonia vs normal on a frontal paediatric chest radiograph",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "framework": {"torch": torch.__version__, "monai": monai.__version__,
                      "onnx_opset": OPSET, "onnxruntime_checked": onnxruntime.__version__},
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "grayscale raw pixel values", "dtype": "float32",
                "shape": ["batch", 1, "height", "width"], "value_range": "any (8-bit or 16-bit)",
                "preprocessing_in_graph": f"bilinear antialiased resize to {size}x{size}, "
                                          "per-image z-score",
                "expects": "display-ready radiograph: modality and VOI LUT applied, "
                           "MONOCHROME2 (bright bone)",
            }},
            "outputs": {
                "probability": {"type": "probabilities", "dtype": "float32", "shape": ["batch"],
                                "value_range": [0, 1], "channel_def": {"1": "pneumonia"},
                                "calibrated": True},
                "cam": {"type": "class activation map", "dtype": "float32",
                        "shape": ["batch", 1, size // stride, size // stride],
                        "description": "pneumonia evidence per region (logit units); stretch "
                                       "over the whole image to overlay"},
            },
        },
        "calibration": {"method": "temperature scaling on validation",
                        "temperature": cal["temperature"]},
        "operating_point": {"threshold": cal["threshold"], "criterion": cal["criterion"],
                            "validation": cal["validation"]},
        "export_parity_max_abs_diff": parity,
        "training_data": {
            "dataset": cxr_data.DATASET_FOLDER,
            "source": "Kermany et al. 2018, Mendeley Data doi:10.17632/rscbjbr9sj.2",
            "licence": "CC BY 4.0",
            "manifest_sha256": cxr_data.expected_manifest_sha256(cxr_data.dataset_root()),
            "split_sha256": {name: records_sha256(getattr(splits, name))
                             for name in ("train", "val", "test")},
            "split_sizes": {name: len(getattr(splits, name)) for name in ("train", "val", "test")},
        },
        "training_config": cfg,
        "licence": "CC BY 4.0 (model weights derived from CC BY 4.0 data; cite Kermany et al., "
                   "Cell 2018;172(5):1122-1131)",
    }


def export(run: Path, bundle: Path, version: str) -> dict:
    """Write `model.onnx` and `metadata.json` into `bundle`; return the metadata."""
    cal_file = run / "calibration.json"
    cal = json.loads(cal_file.read_text()) if cal_file.is_file() else calibrate(run)
    net, cfg = load_trained(run)
    model = CalibratedCxr(net, cal["temperature"]).eval()
    bundle.mkdir(parents=True, exist_ok=True)
    onnx_path = bundle / "model.onnx"
    export_onnx(model, onnx_path)
    parity = check_parity(model, onnx_path)
    meta = metadata(cfg, cal, onnx_path, version, parity)
    (bundle / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
