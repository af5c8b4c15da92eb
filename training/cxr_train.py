"""Train the chest-radiograph network with `transformers.Trainer` (checkpoints, resume, accelerate).

Single process: `clinassist train cxr --output runs/cxr`. Several GPUs or nodes: the same
entry point under `accelerate launch` or `torchrun` (see README, "Distributed training").
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_auc_score
from torch.utils.data import Dataset

from training import cxr_data
from training.cxr_model import CxrNet

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "cxr_pneumonia.yaml"


def load_config(path: Path | str = DEFAULT_CONFIG) -> dict:
    return yaml.safe_load(Path(path).read_text())


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


def collate(items: list[dict]) -> dict:
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


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
    return CxrNet(cfg["image_size"], tuple(cfg["widths"]), pos_weight=pos_weight)


def latest_checkpoint(run: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = run / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def record_session(run: Path, checkpoint: str | None, final_step: int) -> None:
    """Append this session to `sessions.json`, so a run's interruptions and resumes are visible."""
    log = run / "sessions.json"
    sessions = json.loads(log.read_text()) if log.is_file() else []
    start = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0
    sessions.append({"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "resumed_from_step": start, "final_step": final_step})
    log.write_text(json.dumps(sessions, indent=1))


def train(config_path: Path | str, output: Path, resume: bool = False,
          limit: int | None = None, epochs: float | None = None) -> Path:
    """Train and write `output/final/model.safetensors` plus `config.yaml`; return the run dir."""
    from transformers import Trainer, TrainingArguments, set_seed

    output.mkdir(parents=True, exist_ok=True)
    saved_config = output / "config.yaml"
    cfg = load_config(saved_config if resume and saved_config.exists() else config_path)
    if epochs is not None:
        cfg["epochs"] = epochs
    saved_config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    set_seed(cfg["seed"])
    data = prepare_data(cfg, limit)
    net = build_net(cfg, pos_weight=balanced_pos_weight(data.train.targets))
    args = TrainingArguments(
        output_dir=str(output / "checkpoints"), num_train_epochs=cfg["epochs"],
        per_device_train_batch_size=cfg["batch_size"], per_device_eval_batch_size=64,
        learning_rate=cfg["learning_rate"], weight_decay=cfg["weight_decay"],
        warmup_steps=cfg["warmup_ratio"], lr_scheduler_type="cosine",
        eval_strategy="epoch", save_strategy="epoch", save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=False,
        logging_steps=20, seed=cfg["seed"], data_seed=cfg["seed"], report_to="none",
        dataloader_num_workers=0, remove_unused_columns=False, use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=net, args=args, train_dataset=data.train, eval_dataset=data.val,
                      data_collator=collate, compute_metrics=auc_metric)
    checkpoint = latest_checkpoint(output) if resume else None
    trainer.train(resume_from_checkpoint=checkpoint)
    record_session(output, checkpoint, trainer.state.global_step)
    final = output / "final"
    final.mkdir(exist_ok=True)
    from safetensors.torch import save_file

    save_file(trainer.model.state_dict(), str(final / "model.safetensors"))
    shutil.copy(saved_config, final / "config.yaml")
    (output / "history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    return output


def load_trained(run: Path) -> tuple[CxrNet, dict]:
    from safetensors.torch import load_file

    cfg = load_config(run / "final" / "config.yaml")
    net = build_net(cfg)
    net.load_state_dict(load_file(str(run / "final" / "model.safetensors")))
    return net.eval(), cfg
