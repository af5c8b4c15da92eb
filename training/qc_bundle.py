"""Export the pixel QC model to its bundle and evaluate it on held-out images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clinassist.bundle import Bundle, file_sha256
from clinassist.training import bundle_metadata, cxr_data, qc_data
from clinassist.training.cxr_export import PARITY_TOLERANCE, ExportError
from clinassist.training.onnx_export import export_onnx, max_abs_difference
from clinassist.training.qc_model import QcProbabilities
from clinassist.training.qc_train import load_trained

BUNDLE_NAME = "qc_radiograph"


def held_out_chest(count: int | None = None) -> np.ndarray:
    """Official test-split radiographs (never seen in QC training or validation)."""
    test = [r for r in cxr_data.read_manifest() if r.split == "test"]
    return cxr_data.load_pixels(test[:count]).astype(np.float32)


def export(run: Path, bundle: Path, version: str) -> dict:
    net, cfg = load_trained(run)
    model = QcProbabilities(net).eval()
    bundle.mkdir(parents=True, exist_ok=True)
    onnx_path = bundle / "model.onnx"
    export_onnx(model, onnx_path, ["probabilities"])
    chest = held_out_chest(16)[:, None]
    parity = max_abs_difference(model, onnx_path, [chest, chest[:2, :, ::2] * 200], "probabilities")
    if parity > PARITY_TOLERANCE:
        raise ExportError(f"ONNX and PyTorch QC probabilities differ by {parity:.2e}")
    meta = {
        "name": BUNDLE_NAME,
        "version": version,
        "task": "image quality control: is this a frontal chest radiograph, upright, "
                "unmirrored and not inverted?",
        "created": bundle_metadata.now(),
        "model_file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "framework": bundle_metadata.framework(),
        "network_data_format": {
            "inputs": {"image": bundle_metadata.raw_image_input(cfg["image_size"])},
            "outputs": {"probabilities": {
                "type": "probabilities", "dtype": "float32",
                "shape": ["batch", len(qc_data.QC_CLASSES)], "value_range": [0, 1],
                "channel_def": dict(enumerate(qc_data.QC_CLASSES))}},
        },
        "classes": list(qc_data.QC_CLASSES),
        "accepted_class": qc_data.QC_CLASSES[qc_data.ACCEPTED_CLASS],
        "decision": "accept when the most probable class is the accepted class",
        "export_parity_max_abs_diff": parity,
        "training_data": {
            **bundle_metadata.kermany_training_data(cfg),
            "negatives": "pydicom's bundled test images (pydicom/data/test_files, MIT-licensed "
                         "package), split by file",
            "negative_files": {split: list(names) for split, names in qc_data.NEGATIVE_FILES.items()},
        },
        "training_config": cfg,
        "licence": "CC BY 4.0 (derived from Kermany et al. 2018 radiographs)",
    }
    (bundle / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def predicted_classes(bundle: Bundle, images: list[np.ndarray]) -> np.ndarray:
    """Most probable class per image, one image at a time (held-out images differ in size)."""
    return np.array([int(bundle.run(image=img[None, None].astype(np.float32))["probabilities"]
                         .argmax()) for img in images])


def held_out_items() -> tuple[list[np.ndarray], np.ndarray]:
    """Every test-split radiograph in each chest class, and every held-out negative file in
    each orientation; the negatives' true class is `not_chest_radiograph` whatever the view."""
    images, truth = [], []
    for qc_class in range(qc_data.NOT_CHEST):
        for image in held_out_chest():
            images.append(qc_data.chest_variant(image, qc_class))
            truth.append(qc_class)
    for negative in qc_data.other_modality_images("test"):
        for view in range(qc_data.NOT_CHEST):
            images.append(qc_data.chest_variant(negative, view))
            truth.append(qc_data.NOT_CHEST)
    return images, np.array(truth)


def evaluate(bundle: Bundle) -> dict:
    images, truth = held_out_items()
    predicted = predicted_classes(bundle, images)
    accepted_truth = truth == qc_data.ACCEPTED_CLASS
    accepted = predicted == qc_data.ACCEPTED_CLASS
    return {
        "model": bundle.name,
        "version": bundle.version,
        "held_out": f"{int(accepted_truth.sum())} official-test radiographs in "
                    f"{qc_data.NOT_CHEST} chest classes, and "
                    f"{len(qc_data.NEGATIVE_FILES['test'])} held-out other-modality files in "
                    f"{qc_data.NOT_CHEST} views",
        "items": int(len(truth)),
        "accuracy": float(np.mean(predicted == truth)),
        "recall_per_class": {name: float(np.mean(predicted[truth == c] == c))
                             for c, name in enumerate(qc_data.QC_CLASSES)},
        "accept_reject_accuracy": float(np.mean(accepted == accepted_truth)),
        "false_rejection_rate": float(np.mean(~accepted[accepted_truth])),
        "false_acceptance_rate": float(np.mean(accepted[~accepted_truth])),
        "confusion": [[int(np.sum((truth == t) & (predicted == p)))
                       for p in range(len(qc_data.QC_CLASSES))]
                      for t in range(len(qc_data.QC_CLASSES))],
    }


def format_table(result: dict) -> str:
    lines = [f"{result['model']} {result['version']}: {result['held_out']}",
             f"  accuracy (7 classes)     {result['accuracy']:.3f}",
             f"  accept/reject accuracy   {result['accept_reject_accuracy']:.3f}",
             f"  false rejection rate     {result['false_rejection_rate']:.3f}",
             f"  false acceptance rate    {result['false_acceptance_rate']:.3f}"]
    lines += [f"  recall {name:<24} {value:.3f}"
              for name, value in result["recall_per_class"].items()]
    return "\n".join(lines)
