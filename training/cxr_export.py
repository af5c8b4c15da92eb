"""Calibrate a trained run on validation, export it to one ONNX file, and write the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from clinassist.bundle import file_sha256
from clinassist.errors import ClinassistError
from clinassist.training import bundle_metadata, calibration, cxr_data
from clinassist.training.cxr_model import CalibratedCxr, CxrEnsemble, CxrNet
from clinassist.training.cxr_train import load_trained
from clinassist.training.metrics import expected_calibration_error, sensitivity, specificity
from clinassist.training.onnx_export import (export_onnx, fold_batch_norms, max_abs_difference,
                                  round_to_half_precision, store_weights_as_half)

MIN_SENSITIVITY = 0.95
PARITY_TOLERANCE = 1e-4
BUNDLE_NAME = "cxr_pneumonia"


class ExportError(ClinassistError):
    """The runs cannot form one bundle, or the exported graph disagrees with PyTorch."""


def logits_of(net: CxrNet | CxrEnsemble, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([
            net.logit_and_cam(torch.from_numpy(pixels[i:i + batch_size]).float().unsqueeze(1))[0].numpy()
            for i in range(0, len(pixels), batch_size)
        ])


def load_ensemble(runs: list[Path]) -> tuple[CxrEnsemble, list[dict]]:
    """The trained runs as one ensemble with half-precision weights (what the bundle stores).

    The members must share the validation split, which calibration relies on."""
    loaded = [load_trained(run) for run in runs]
    cfgs = [cfg for _, cfg in loaded]
    if len({(cfg["seed"], cfg["val_fraction"]) for cfg in cfgs}) > 1:
        raise ExportError("ensemble members were trained on different validation splits "
                          "(seed / val_fraction differ); calibration needs one split")
    ensemble = CxrEnsemble([net for net, _ in loaded]).eval()
    return round_to_half_precision(fold_batch_norms(ensemble)), cfgs


def calibrate(runs: list[Path]) -> dict:
    """Fit the temperature and the operating point of the ensemble on the validation split."""
    ensemble, cfgs = load_ensemble(runs)
    return calibrate_on_validation(ensemble, cfgs[0])


def validation_data(cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and labels of the run's validation split."""
    splits = cxr_data.make_splits(cxr_data.read_manifest(), cfg["val_fraction"], cfg["seed"])
    return cxr_data.load_pixels(splits.val), cxr_data.labels(splits.val)


def calibrate_on_validation(net: CxrEnsemble, cfg: dict) -> dict:
    pixels, targets = validation_data(cfg)
    logits = logits_of(net, pixels)
    temperature = calibration.fit_temperature(logits, targets)
    probabilities = calibration.sigmoid(logits / temperature)
    threshold = calibration.threshold_for_sensitivity(probabilities, targets, MIN_SENSITIVITY)
    return {
        "temperature": temperature,
        "threshold": threshold,
        "criterion": f"highest threshold with sensitivity >= {MIN_SENSITIVITY} on validation",
        "validation": {
            "images": len(targets),
            "nll_after": calibration.binary_nll(logits / temperature, targets),
            "sensitivity_at_threshold": sensitivity(probabilities, targets, threshold),
            "specificity_at_threshold": specificity(probabilities, targets, threshold),
            "ece_before": expected_calibration_error(calibration.sigmoid(logits), targets),
            "ece_after": expected_calibration_error(probabilities, targets),
        },
    }


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
    worst = max_abs_difference(model, onnx_path, parity_images(), "probability")
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"ONNX and PyTorch probabilities differ by {worst:.2e} "
                          f"(tolerance {PARITY_TOLERANCE:.0e})")
    return worst


def metadata(cfgs: list[dict], cam_size: int, cal: dict, onnx_path: Path, version: str,
             parity: float) -> dict:
    sizes = [cfg["image_size"] for cfg in cfgs]
    return {
        "name": BUNDLE_NAME,
        "version": version,
        "task": "binary classification: pneumonia vs normal on a frontal paediatric chest radiograph",
        "created": bundle_metadata.now(),
        "model_file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "framework": bundle_metadata.framework(),
        "network_data_format": {
            "inputs": {"image": bundle_metadata.raw_image_input(*sizes)},
            "outputs": {
                "probability": {"type": "probabilities", "dtype": "float32", "shape": ["batch"],
                                "value_range": [0, 1], "channel_def": {"1": "pneumonia"},
                                "calibrated": True},
                "cam": {"type": "class activation map", "dtype": "float32",
                        "shape": ["batch", 1, cam_size, cam_size],
                        "description": "pneumonia evidence per region (logit units); stretch "
                                       "over the whole image to overlay"},
            },
        },
        "ensemble": {"members": len(cfgs), "input_sizes": sizes,
                     "combination": "mean of member logits; activation maps resized to the "
                                    "finest grid and averaged",
                     "weights": "rounded to float16 and stored as float16 (computed in float32)"},
        "calibration": {"method": "temperature scaling on validation",
                        "temperature": cal["temperature"]},
        "operating_point": {"threshold": cal["threshold"], "criterion": cal["criterion"],
                            "validation": cal["validation"]},
        "export_parity_max_abs_diff": parity,
        "training_data": bundle_metadata.kermany_training_data(cfgs[0]),
        "training_configs": cfgs,
        "licence": "CC BY 4.0 (model weights derived from CC BY 4.0 data; cite Kermany et al., "
                   "Cell 2018;172(5):1122-1131)",
    }


def export(runs: list[Path], bundle: Path, version: str) -> dict:
    """Calibrate the runs as one ensemble on validation, write `model.onnx` and `metadata.json`
    into `bundle`, and return the metadata."""
    ensemble, cfgs = load_ensemble(runs)
    cal = calibrate_on_validation(ensemble, cfgs[0])
    model = CalibratedCxr(ensemble, cal["temperature"]).eval()
    bundle.mkdir(parents=True, exist_ok=True)
    onnx_path = bundle / "model.onnx"
    export_onnx(model, onnx_path, ["probability", "cam"])
    store_weights_as_half(onnx_path)
    parity = check_parity(model, onnx_path)
    meta = metadata(cfgs, ensemble.cam_size, cal, onnx_path, version, parity)
    (bundle / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
