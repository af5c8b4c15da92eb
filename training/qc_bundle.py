"""Export the pixel QC model to its bundle and evaluate it on held-out images."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clinassist.bundle import Bundle, file_sha256
from clinassist.training import (bundle_metadata, cxr_data, nih_adult_data, qc_acceptance,
                                 qc_data)
from clinassist.training.cxr_export import PARITY_TOLERANCE, ExportError
from clinassist.training.cxr_populations import ADULT, PAEDIATRIC
from clinassist.training.onnx_export import export_onnx, max_abs_difference
from clinassist.training.qc_model import QcProbabilities
from clinassist.training.qc_train import load_trained

BUNDLE_NAME = "qc_radiograph"


def held_out_chest(count: int | None = None) -> np.ndarray:
    """Official test-split radiographs (never seen in QC training or validation)."""
    test = [r for r in cxr_data.read_manifest() if r.split == "test"]
    return cxr_data.load_pixels(test[:count]).astype(np.float32)


def export(run: Path, bundle: Path, version: str) -> dict:
    """Fit the acceptance offset on validation, export the graph with it, check parity, and
    write the metadata with each population's validation figures at that offset."""
    net, cfg = load_trained(run)
    parts = qc_acceptance.validation_parts(cfg)
    scored = {population: (qc_acceptance.class_probabilities(torch_predict(net), part.items),
                           part.truth) for population, part in parts.items()}
    offset = qc_acceptance.fit_offset(scored)
    model = QcProbabilities(net, offset).eval()
    bundle.mkdir(parents=True, exist_ok=True)
    onnx_path = bundle / "model.onnx"
    export_onnx(model, onnx_path, ["probabilities"])
    chest = held_out_chest(16)[:, None]
    parity = max_abs_difference(model, onnx_path, [chest, chest[:2, :, ::2] * 200], "probabilities")
    if parity > PARITY_TOLERANCE:
        raise ExportError(f"ONNX and PyTorch QC probabilities differ by {parity:.2e}")
    validation = {population: population_result(
        part.description, qc_acceptance.shifted(scored[population][0], offset).argmax(1),
        part.truth, part.aged_18_plus) for population, part in parts.items()}
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
        "acceptance_offset": {
            "logit_offset": offset,
            "rule": "the smallest of the grid with which every population's validation false "
                    f"rejection is at most {qc_acceptance.FALSE_REJECTION_TARGET}; added to "
                    "the accepted class's logit inside the graph",
            "grid": list(map(float, qc_acceptance.OFFSETS)),
            "validation_false_rejection_without": {
                population: qc_acceptance.false_rejection(p, t)
                for population, (p, t) in scored.items()},
        },
        "validation": validation,
        "export_parity_max_abs_diff": parity,
        "training_data": {
            **bundle_metadata.kermany_training_data(cfg),
            "negatives": "pydicom's bundled test images (pydicom/data/test_files, MIT-licensed "
                         "package), split by file",
            "negative_files": {split: list(names) for split, names in qc_data.NEGATIVE_FILES.items()},
        },
        "adult_data": {**bundle_metadata.adult_training_data(),
                       "share_of_chest_items": cfg["adult_share"]},
        "training_config": cfg,
        "licence": "CC BY 4.0 (derived from Kermany et al. 2018 radiographs) and NIH "
                   "ChestX-ray14 radiographs (no restrictions on use; cite Wang et al., CVPR 2017, "
                   "and acknowledge the NIH Clinical Center as the data provider)",
    }
    (bundle / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def torch_predict(net) -> Callable[[np.ndarray], np.ndarray]:
    """The trained network's probabilities without an offset, as `class_probabilities` calls."""
    import torch

    model = QcProbabilities(net).eval()

    def predict(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(pixels)).numpy()
    return predict


def predicted_classes(bundle: Bundle, images: list[np.ndarray]) -> np.ndarray:
    """Most probable class per image, as the served ONNX file says."""
    return qc_acceptance.class_probabilities(
        lambda pixels: bundle.run(image=pixels)["probabilities"], images).argmax(1)


def held_out_items() -> tuple[list[np.ndarray], np.ndarray]:
    """Every test-split radiograph in each chest class, and every held-out negative file in
    each orientation; the negatives' true class is `not_chest_radiograph` whatever the view."""
    images, truth = qc_acceptance.chest_items(held_out_chest())
    for negative in qc_data.other_modality_images("test"):
        for view in range(qc_data.NOT_CHEST):
            images.append(qc_data.chest_variant(negative, view))
    return images, np.concatenate([truth, np.full(len(images) - len(truth), qc_data.NOT_CHEST)])


def rejection_rate(rejected: np.ndarray) -> dict:
    """How many good radiographs were rejected, with a 95 % Wilson interval."""
    from scipy.stats import binomtest

    count, total = int(rejected.sum()), len(rejected)
    interval = binomtest(count, total).proportion_ci(0.95, method="wilson")
    return {"rate": count / total, "count": count, "of": total,
            "ci95": [float(interval.low), float(interval.high)]}


def population_result(description: str, predicted: np.ndarray, truth: np.ndarray,
                      adult: np.ndarray | None = None) -> dict:
    """One population's radiographs in each chest class: what was rejected and what caught.
    `adult` (per radiograph, aged 18 or over) adds the false rejection among adults."""
    frontal = truth == qc_data.ACCEPTED_CLASS
    rejected = predicted[frontal] != qc_data.ACCEPTED_CLASS
    result = {
        "held_out": description,
        "radiographs": int(frontal.sum()),
        "items": int(len(truth)),
        "false_rejection": rejection_rate(rejected),
        "rejected_as": {qc_data.QC_CLASSES[c]: int(n) for c, n in
                        zip(*np.unique(predicted[frontal][rejected], return_counts=True))},
        "recall_per_class": {qc_data.QC_CLASSES[c]: float(np.mean(predicted[truth == c] == c))
                             for c in range(qc_data.NOT_CHEST)},
        "false_acceptance_rate": float(np.mean(predicted[~frontal] == qc_data.ACCEPTED_CLASS)),
        "confusion": [[int(np.sum((truth == t) & (predicted == p)))
                       for p in range(len(qc_data.QC_CLASSES))]
                      for t in range(qc_data.NOT_CHEST)],
    }
    if adult is not None:
        result["false_rejection_aged_18_plus"] = rejection_rate(rejected[adult])
    return result


def evaluate(bundle: Bundle) -> dict:
    """The 1.0.0 figures (Kermany official test and held-out negatives), then each population's
    radiographs on their own: Kermany children and the adult NIH test patients."""
    images, truth = held_out_items()
    predicted = predicted_classes(bundle, images)
    accepted_truth = truth == qc_data.ACCEPTED_CLASS
    accepted = predicted == qc_data.ACCEPTED_CLASS
    kermany = truth != qc_data.NOT_CHEST  # the radiographs' items (the negatives' are not)
    adult_records = nih_adult_data.make_splits(nih_adult_data.read_manifest()).test
    # never seen in training, selection or the acceptance offset
    adult_pixels = qc_acceptance.adult_radiographs(adult_records)
    adult_items, adult_truth = qc_acceptance.chest_items(adult_pixels)
    adult_predicted = predicted_classes(bundle, adult_items)
    patients = len({r.patient_id for r in adult_records})
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
        "populations": {
            PAEDIATRIC: population_result(
                f"{int(accepted_truth.sum())} Kermany official-test radiographs (children 1-5) "
                f"in {qc_data.NOT_CHEST} chest classes",
                predicted[kermany], truth[kermany]),
            ADULT: population_result(
                f"{len(adult_records)} NIH ChestX-ray14 radiographs of the {patients} test "
                f"patients (512 px) in {qc_data.NOT_CHEST} chest classes",
                adult_predicted, adult_truth, np.array([r.adult for r in adult_records])),
        },
    }


def format_table(result: dict) -> str:
    lines = [f"{result['model']} {result['version']}: {result['held_out']}",
             f"  accuracy (7 classes)     {result['accuracy']:.3f}",
             f"  accept/reject accuracy   {result['accept_reject_accuracy']:.3f}",
             f"  false rejection rate     {result['false_rejection_rate']:.3f}",
             f"  false acceptance rate    {result['false_acceptance_rate']:.3f}"]
    lines += [f"  recall {name:<24} {value:.3f}"
              for name, value in result["recall_per_class"].items()]
    for population, part in result["populations"].items():
        lines.append(f"{population}: {part['held_out']}")
        rates = [("false rejection", part["false_rejection"])]
        if "false_rejection_aged_18_plus" in part:
            rates.append(("  aged 18 or over", part["false_rejection_aged_18_plus"]))
        lines += [f"  {label:<24} {r['rate']:.3f} ({r['count']} of {r['of']}; 95% CI "
                  f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})" for label, r in rates]
        lines.append(f"  rejected as              {part['rejected_as'] or 'none'}")
        lines += [f"  recall {name:<24} {value:.3f}"
                  for name, value in part["recall_per_class"].items()]
        lines.append(f"  false acceptance rate    {part['false_acceptance_rate']:.3f}")
    return "\n".join(lines)
