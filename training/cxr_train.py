"""Train the chest-radiograph network with `transformers.Trainer` (checkpoints, resume, accelerate).

Single process: `clinassist train cxr --output runs/cxr`. Several GPUs or nodes: the same
entry point under `accelerate launch` or `torchrun` (see README, "Distributed training").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import Dataset

from clinassist.training import cxr_data
from clinassist.training.cxr_model import CxrNet
from clinassist.training.trainer import fit, load_config, load_weights, run_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "cxr_pneumonia.yaml"


def default_config() -> dict:
    return load_config(DEFAULT_CONFIG)


def augmentations(cfg: dict):
    """Radiograph-plausible MONAI augmentations: small pose, exposure, blur and noise changes.

    No flips or inversions: those are what image quality control rejects, not pneumonia cues.
    """
    from monai.transforms import (Compose, RandAdjustContrast, RandAffine, RandGaussianNoise,
                                  RandGaussianSmooth)

    a = cfg["augment"]
    return Compose([
        RandAffine(prob=a["affine_prob"], rotate_range=(math.radians(a["rotate_degrees"]),),
                   scale_range=(a["scale"], a["scale"]),
                   translate_range=(a["translate_px"], a["translate_px"]), padding_mode="zeros"),
        RandAdjustContrast(prob=a["contrast_prob"], gamma=tuple(a["gamma"])),
        RandGaussianSmooth(prob=a["smooth_prob"], sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
        RandGaussianNoise(prob=a["noise_prob"], std=a["noise_std"]),
    ])


class RadiographDataset(Dataset):
    """Raw pixels (1, H, W) as float32 with labels; augmented when a transform is given."""

    def __init__(self, pixels: np.ndarray, targets: np.ndarray, transform=None):
        self.pixels, self.targets, self.transform = pixels, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(self.pixels[index]).float().unsqueeze(0)
        if self.transform is not None:
            image = torch.as_tensor(self.transform(image)).float()
        return {"pixel_values": image, "labels": torch.tensor(self.targets[index])}


def auc_metric(prediction) -> dict:
    logits, targets = prediction.predictions, prediction.label_ids
    return {"auc": float(roc_auc_score(targets, logits))}


@dataclass
class PreparedData:
    splits: cxr_data.Splits
    train: RadiographDataset
    val: RadiographDataset


def sample(records: list, count: int, rng: np.random.Generator) -> list:
    return [records[i] for i in rng.permutation(len(records))[:count]]


def prepare_data(cfg: dict, limit: int | None = None) -> PreparedData:
    """Verify the data, split it, and decode train/val pixels (optionally the first `limit`)."""
    records = cxr_data.read_manifest()
    cxr_data.verify_images(records)
    splits = cxr_data.make_splits(records, cfg["val_fraction"], cfg["seed"])
    train_records, val_records = splits.train, splits.val
    if limit is not None:
        rng = np.random.default_rng(cfg["seed"])
        train_records = sample(train_records, limit, rng)
        val_records = sample(val_records, max(limit // 4, 8), rng)
    return PreparedData(
        splits,
        RadiographDataset(cxr_data.load_pixels(train_records), cxr_data.labels(train_records),
                          augmentations(cfg)),
        RadiographDataset(cxr_data.load_pixels(val_records), cxr_data.labels(val_records)),
    )


def balanced_pos_weight(targets: np.ndarray) -> float:
    """Weight on positive cases that gives both classes the same total weight in the loss."""
    return float((targets == 0).sum() / max((targets == 1).sum(), 1))


def build_net(cfg: dict, pos_weight: float = 1.0) -> CxrNet:
    return CxrNet(cfg["image_size"], tuple(cfg["widths"]), pos_weight=pos_weight,
                  max_pool=cfg.get("max_pool", False))


def train(config_path: Path | str, output: Path, resume: bool = False,
          limit: int | None = None, epochs: float | None = None) -> Path:
    """Train and write `output/final/model.safetensors` plus `config.yaml`; return the run dir."""
    cfg = run_config(config_path, output, resume, epochs)
    data = prepare_data(cfg, limit)
    net = build_net(cfg, pos_weight=balanced_pos_weight(data.train.targets))
    fit(net, data.train, data.val, output, cfg, resume, auc_metric)
    return output


def load_trained(run: Path) -> tuple[CxrNet, dict]:
    cfg = load_config(run / "final" / "config.yaml")
    return load_weights(build_net(cfg), run), cfg
