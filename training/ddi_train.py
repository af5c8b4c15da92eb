"""Train the interaction-type model on each DrugBank-86 split (`clinassist train ddi`).

It uses the shared `transformers.Trainer` loop (`training.trainer.fit`): the fingerprints are
looked up per item from one in-memory table, so the per-item overhead is small next to a
batch of 512 through the MLP, and checkpoints, resume and best-epoch selection come for free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from clinassist.training import ddi_data
from clinassist.training.ddi_model import DdiNet
from clinassist.training.trainer import fit, load_config, load_weights, run_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "ddi.yaml"


def type_metrics(prediction) -> dict:
    predicted = prediction.predictions.argmax(1)
    return {"accuracy": float(np.mean(predicted == prediction.label_ids)),
            "macro_f1": float(f1_score(prediction.label_ids, predicted, average="macro"))}


def fingerprints(data: ddi_data.DrugBank86, cfg: dict) -> np.ndarray:
    return ddi_data.morgan_fingerprints(data.smiles, cfg["fingerprint_radius"],
                                        cfg["fingerprint_bits"])


def split_of(data: ddi_data.DrugBank86, cfg: dict, split: str) -> ddi_data.Split:
    return ddi_data.make_split(data.pairs, split, cfg["seed"], cfg["test_fraction"],
                               cfg["val_fraction"])


def class_weights(train: ddi_data.Pairs, classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1 over the classes present."""
    counts = np.bincount(train.classes, minlength=classes).astype(np.float32)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return torch.from_numpy(weights * (counts > 0).sum() / weights.sum())


def build_net(cfg: dict, classes: int, weights: torch.Tensor | None = None) -> DdiNet:
    return DdiNet(cfg["fingerprint_bits"], tuple(cfg["hidden"]), classes, cfg["dropout"], weights)


def train_split(data: ddi_data.DrugBank86, table: np.ndarray, cfg: dict, split: str,
                run: Path, resume: bool, limit: int | None) -> Path:
    parts = split_of(data, cfg, split)
    train_pairs, val_pairs = parts.train.sample(limit), parts.val.sample(limit)
    weights = class_weights(train_pairs, len(data.types)) if cfg["class_weighting"] else None
    fit(build_net(cfg, len(data.types), weights), ddi_data.PairDataset(train_pairs, table),
        ddi_data.PairDataset(val_pairs, table), run, cfg, resume, type_metrics)
    return run


def run_of(output: Path, split: str) -> Path:
    """S2 and S3 share one training set (the pairs of two training drugs) and so one run."""
    return output / ("s1" if split == "s1" else "s2s3")


def train(config_path: Path | str, output: Path, resume: bool = False, limit: int | None = None,
          epochs: float | None = None, split: str | None = None) -> Path:
    """Train the run for one split, or both runs (S1, and S2/S3) when `split` is None."""
    data = ddi_data.load()
    cfg = run_config(config_path, output, resume, epochs)
    table = fingerprints(data, cfg)
    for name in [split] if split else ("s1", "s2"):
        run = run_of(output, name)
        run_config(output / "config.yaml", run, resume, epochs)
        train_split(data, table, cfg, name, run, resume, limit)
    return output


def load_trained(run: Path) -> tuple[DdiNet, dict]:
    cfg = load_config(run / "final" / "config.yaml")
    return load_weights(build_net(cfg, len(ddi_data.read_types(ddi_data.dataset_root()))), run), cfg
