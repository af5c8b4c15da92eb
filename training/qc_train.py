"""Train the pixel quality-control model (`clinassist train qc`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clinassist.training import cxr_data, qc_data
from clinassist.training.qc_model import QcNet
from clinassist.training.trainer import fit, load_config, load_weights, run_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "qc.yaml"


def accuracy_metric(prediction) -> dict:
    return {"accuracy": float(np.mean(prediction.predictions.argmax(1) == prediction.label_ids))}


def build_net(cfg: dict) -> QcNet:
    return QcNet(cfg["image_size"], tuple(cfg["widths"]))


def datasets_for(cfg: dict, limit: int | None = None) -> tuple[qc_data.QcDataset, qc_data.QcDataset]:
    """Training items from the triage model's train split, validation items from its
    validation split; the official test split is kept for `evaluate qc`."""
    records = cxr_data.read_manifest()
    splits = cxr_data.make_splits(records, cfg["val_fraction"], cfg["seed"])
    train_records = splits.train[:limit] if limit else splits.train
    negatives = qc_data.other_modality_images("train")
    scale = (limit / len(splits.train)) if limit else 1.0
    train_set = qc_data.QcDataset(cxr_data.load_pixels(train_records), negatives,
                                  max(int(cfg["train_items"] * scale), 14), cfg["seed"], True)
    val_set = qc_data.QcDataset(cxr_data.load_pixels(splits.val), negatives,
                                max(int(cfg["val_items"] * scale), 14), cfg["seed"], False)
    return train_set, val_set


def train(config_path: Path | str, output: Path, resume: bool = False,
          limit: int | None = None, epochs: float | None = None) -> Path:
    cfg = run_config(config_path, output, resume, epochs)
    train_set, val_set = datasets_for(cfg, limit)
    fit(build_net(cfg), train_set, val_set, output, cfg, resume, accuracy_metric)
    return output


def load_trained(run: Path) -> tuple[QcNet, dict]:
    cfg = load_config(run / "final" / "config.yaml")
    return load_weights(build_net(cfg), run), cfg
