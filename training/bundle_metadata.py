"""Metadata blocks every bundle carries: framework versions and the data it came from."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from clinassist.training import cxr_data, nih_adult_data
from clinassist.training.onnx_export import OPSET

KERMANY_SOURCE = "Kermany et al. 2018, Mendeley Data doi:10.17632/rscbjbr9sj.2"


def records_sha256(records: list) -> str:
    """One hash of a split's file list (path, MD5 and label of each record)."""
    lines = sorted(f"{r.path},{r.md5},{r.label}" for r in records)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def framework() -> dict:
    import monai
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "monai": monai.__version__, "onnx_opset": OPSET,
            "onnxruntime_checked": onnxruntime.__version__}


def kermany_training_data(cfg: dict) -> dict:
    """Which Kermany images trained, validated and tested the model, by hash."""
    splits = cxr_data.make_splits(cxr_data.read_manifest(), cfg["val_fraction"], cfg["seed"])
    return {
        "dataset": cxr_data.DATASET_FOLDER,
        "source": KERMANY_SOURCE,
        "licence": "CC BY 4.0",
        "manifest_sha256": cxr_data.expected_manifest_sha256(cxr_data.dataset_root()),
        "split_sha256": {name: records_sha256(getattr(splits, name))
                         for name in ("train", "val", "test")},
        "split_sizes": {name: len(getattr(splits, name)) for name in ("train", "val", "test")},
    }


def raw_image_input(*sizes: int) -> dict:
    resizes = " and ".join(f"{size}x{size}" for size in sizes)
    return {
        "type": "image", "format": "grayscale raw pixel values", "dtype": "float32",
        "shape": ["batch", 1, "height", "width"], "value_range": "any (8-bit or 16-bit)",
        "preprocessing_in_graph": f"bilinear antialiased resize to {resizes}, per-image z-score",
        "expects": "display-ready radiograph: modality and VOI LUT applied, MONOCHROME2 "
                   "(bright bone)",
    }


def adult_training_data() -> dict:
    """Which adult NIH images trained (if the run used them), validated and tested the model."""
    splits = nih_adult_data.make_splits(nih_adult_data.read_manifest())
    return {
        "dataset": nih_adult_data.DATASET_FOLDER,
        "source": nih_adult_data.SOURCE,
        "licence": nih_adult_data.LICENCE,
        "manifest_sha256": cxr_data.expected_manifest_sha256(nih_adult_data.dataset_root()),
        "split_seed": nih_adult_data.SPLIT_SEED,
        "split_sha256": {name: records_sha256(getattr(splits, name))
                         for name in ("train", "val", "test")},
        "split_sizes": {name: len(getattr(splits, name)) for name in ("train", "val", "test")},
    }
