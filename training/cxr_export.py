"""Calibrate a trained run on validation, export it to one ONNX file, and write the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from clinassist.bundle import file_sha256
from clinassist.errors import ClinassistError
from clinassist.training import bundle_metadata, calibration, cxr_data, cxr_populations
from clinassist.training.cxr_model import CxrEnsemble, CxrNet, ExportedCxr
from clinassist.training.cxr_populations import ADULT
from clinassist.training.cxr_train import load_trained
from clinassist.training.metrics import expected_calibration_error, sensitivity, specificity
from clinassist.training.onnx_export import (export_onnx, fold_batch_norms,
                                             round_to_half_precision, store_weights_as_half)

PARITY_TOLERANCE = 1e-4
BUNDLE_NAME = "cxr_pneumonia"
# The service picks the paediatric operating point below this age, the adult one at or above
# it and when the age is unknown.
PAEDIATRIC_BELOW_YEARS = 18


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
    """Fit each population's temperature and operating point of the ensemble on validation."""
    ensemble, cfgs = load_ensemble(runs)
    return calibrate_on_validation(ensemble, cfgs[0])


def operating_point(logits: np.ndarray, targets: np.ndarray) -> dict:
    """Temperature scaling and the triage threshold fitted on one population's validation set."""
    temperature = calibration.fit_temperature(logits, targets)
    probabilities = calibration.sigmoid(logits / temperature)
    threshold, criterion = calibration.choose_threshold(probabilities, targets)
    return {
        "temperature": temperature,
        "threshold": threshold,
        "criterion": criterion,
        "validation": {
            "images": len(targets),
            "positives": int(targets.sum()),
            "nll_after": calibration.binary_nll(logits / temperature, targets),
            "sensitivity_at_threshold": sensitivity(probabilities, targets, threshold),
            "specificity_at_threshold": specificity(probabilities, targets, threshold),
            "ece_before": expected_calibration_error(calibration.sigmoid(logits), targets),
            "ece_after": expected_calibration_error(probabilities, targets),
        },
    }


def validation_logits(net: CxrEnsemble, cfg: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each population's validation logits and labels."""
    return {name: (logits_of(net, images.pixels), images.targets)
            for name, images in cxr_populations.validation_sets(cfg).items()}


def calibrate_on_validation(net: CxrEnsemble, cfg: dict) -> dict:
    """{population: operating point}, each fitted on that population's validation set only."""
    return {name: {"description": cxr_populations.DESCRIPTIONS[name],
                   **operating_point(logits, targets)}
            for name, (logits, targets) in validation_logits(net, cfg).items()}


def parity_images(count: int = 24) -> list[np.ndarray]:
    """Real test radiographs as exported inputs: 8-bit as stored, and rescaled to a 12-bit DICOM-like
    range at another size, so both the dynamic shape and the range invariance are exercised."""
    test = [r for r in cxr_data.read_manifest() if r.split == "test"]
    chosen = [test[i] for i in np.linspace(0, len(test) - 1, count).astype(int)]
    eight_bit = cxr_data.load_pixels(chosen).astype(np.float32)[:, None]
    twelve_bit = np.repeat(eight_bit[:4] * 16.0, 2, axis=2)[:, :, :, :200]
    return [eight_bit, twelve_bit]


def check_parity(model: ExportedCxr, onnx_path: Path, temperatures: list[float]) -> float:
    """Largest |p_torch - p_onnx| over real test images, the probability taken under each
    population's temperature as the service computes it; raises if above the tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in parity_images():
        with torch.no_grad():
            expected = model(torch.from_numpy(batch))[0].numpy()
        actual = session.run(["logit"], {"image": batch})[0]
        for temperature in temperatures:
            difference = (calibration.sigmoid(expected / temperature)
                          - calibration.sigmoid(actual / temperature))
            worst = max(worst, float(np.max(np.abs(difference))))
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"ONNX and PyTorch probabilities differ by {worst:.2e} "
                          f"(tolerance {PARITY_TOLERANCE:.0e})")
    return worst


def metadata(cfgs: list[dict], cam_size: int, populations: dict, onnx_path: Path, version: str,
             parity: float) -> dict:
    sizes = [cfg["image_size"] for cfg in cfgs]
    return {
        "name": BUNDLE_NAME,
        "version": version,
        "task": "binary classification: pneumonia vs normal on a frontal chest radiograph of a "
                "child or an adult",
        "created": bundle_metadata.now(),
        "model_file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "framework": bundle_metadata.framework(),
        "network_data_format": {
            "inputs": {"image": bundle_metadata.raw_image_input(*sizes)},
            "outputs": {
                "logit": {"type": "logits", "dtype": "float32", "shape": ["batch"],
                          "channel_def": {"1": "pneumonia"}, "calibrated": False,
                          "description": "probability = sigmoid(logit / temperature) with the "
                                         "temperature of the patient's population"},
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
        "populations": populations,
        "population_rule": {
            "paediatric_below_years": PAEDIATRIC_BELOW_YEARS, "unknown_age": ADULT,
            "description": "the paediatric operating point for patients under "
                           f"{PAEDIATRIC_BELOW_YEARS} (PatientAge, else birth and study dates), "
                           "the adult one otherwise, including when the age is unknown",
        },
        "calibration": {"method": "temperature scaling on each population's validation set; "
                                  "probability = sigmoid(logit / temperature)"},
        "export_parity_max_abs_diff": parity,
        "training_data": bundle_metadata.kermany_training_data(cfgs[0]),
        "adult_data": bundle_metadata.adult_training_data(),
        "training_configs": cfgs,
        "licence": "CC BY 4.0 (weights derived from Kermany et al., Cell 2018;172(5):1122-1131, "
                   "CC BY 4.0, and from NIH ChestX-ray14, no restrictions on use: cite Wang et "
                   "al., CVPR 2017 and acknowledge the NIH Clinical Center)",
    }


def export(runs: list[Path], bundle: Path, version: str) -> dict:
    """Calibrate the runs as one ensemble on each population's validation set, write
    `model.onnx` and `metadata.json` into `bundle`, and return the metadata."""
    ensemble, cfgs = load_ensemble(runs)
    populations = calibrate_on_validation(ensemble, cfgs[0])
    model = ExportedCxr(ensemble).eval()
    bundle.mkdir(parents=True, exist_ok=True)
    onnx_path = bundle / "model.onnx"
    export_onnx(model, onnx_path, ["logit", "cam"])
    store_weights_as_half(onnx_path)
    parity = check_parity(model, onnx_path, [p["temperature"] for p in populations.values()])
    meta = metadata(cfgs, ensemble.cam_size, populations, onnx_path, version, parity)
    (bundle / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
