"""Train the chest-radiograph network with `transformers.Trainer` (checkpoints, resume, accelerate).

Single process: `clinassist train cxr --output runs/cxr`. Several GPUs or nodes: the same
entry point under `accelerate launch` or `torchrun` (see README, "Distributed training").

A config with an `adult` block trains on two populations at once: the Kermany children and the
adult NIH train patients, the adults resampled to a fixed share of every epoch with equal weight
per label x view stratum (so the small adult set does not drown, and the view, which differs by
class in that set, predicts nothing in training). Validation then holds both populations'
validation parts and reports each one's AUC (and the adults' within each view).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import Dataset

from clinassist.training import cxr_data, cxr_init, nih_adult_data, site_data
from clinassist.training.cxr_model import CxrNet
from clinassist.training.cxr_populations import ADULT, PAEDIATRIC
from clinassist.training.trainer import fit, load_config, load_weights, run_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "cxr_pneumonia.yaml"


def default_config() -> dict:
    return load_config(DEFAULT_CONFIG)


def augmentations(cfg: dict):
    """Radiograph-plausible MONAI augmentations: small pose, exposure, blur and noise changes.

    No flips or inversions: those are what image quality control rejects, not pneumonia cues.
    Every step draws from NumPy's global generator (as scikit-learn's `check_random_state(None)`
    does), which the Trainer seeds and saves in each checkpoint: a run repeats exactly, and a
    resumed one goes on with the draws the uninterrupted run would have made. (MONAI's own
    default is a generator per transform, seeded by the operating system.)
    """
    from monai.transforms import (Compose, RandAdjustContrast, RandAffine, RandGaussianNoise,
                                  RandGaussianSmooth, RandHistogramShift)

    a = cfg["augment"]
    steps = [
        RandAffine(prob=a["affine_prob"], rotate_range=(math.radians(a["rotate_degrees"]),),
                   scale_range=(a["scale"], a["scale"]),
                   translate_range=(a["translate_px"], a["translate_px"]), padding_mode="zeros"),
        RandAdjustContrast(prob=a["contrast_prob"], gamma=tuple(a["gamma"])),
    ]
    if a.get("histogram_shift_prob"):  # exposure and processing curves differ between sites
        steps.append(RandHistogramShift(num_control_points=(5, 10),
                                        prob=a["histogram_shift_prob"]))
    steps += [RandGaussianSmooth(prob=a["smooth_prob"], sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
              RandGaussianNoise(prob=a["noise_prob"], std=a["noise_std"])]
    augment = Compose(steps)  # Compose reseeds its steps from its own generator: set theirs after
    for step in augment.transforms:
        step.set_random_state(state=np.random.mtrand._rand)
    return augment


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


KERMANY_SIZE = 224  # the Kermany images' size; adult images are resized to it for training


@dataclass(frozen=True)
class ValidationGroups:
    """Which population (and, for adults, which view) each validation item belongs to."""

    population: np.ndarray
    view: np.ndarray


def validation_aucs(scores: np.ndarray, targets: np.ndarray, groups: ValidationGroups) -> dict:
    """AUC per population, and for adults within each view; `worst_auc` is the lowest of the
    paediatric AUC and the adult within-view AUCs (a model is as good as its worst population)."""
    out: dict[str, float] = {}
    parts = {PAEDIATRIC: groups.population == PAEDIATRIC, ADULT: groups.population == ADULT}
    for view in nih_adult_data.VIEWS:
        parts[f"adult_{view}"] = parts[ADULT] & (groups.view == view)
    for name, mask in parts.items():
        if mask.any() and len(np.unique(targets[mask])) == 2:
            out[f"auc_{name}"] = float(roc_auc_score(targets[mask], scores[mask]))
    guarded = [out[k] for k in ("auc_paediatric", "auc_adult_AP", "auc_adult_PA") if k in out]
    out["worst_auc"] = min(guarded) if guarded else float("nan")
    return out


def population_metrics(groups: ValidationGroups):
    def compute(prediction) -> dict:
        return validation_aucs(prediction.predictions, prediction.label_ids, groups)
    return compute


@dataclass
class PreparedData:
    splits: cxr_data.Splits
    adult_splits: nih_adult_data.Splits | None
    train: RadiographDataset
    val: RadiographDataset
    val_groups: ValidationGroups


def sample(records: list, count: int, rng: np.random.Generator) -> list:
    return [records[i] for i in rng.permutation(len(records))[:count]]


def adult_schedule(records: list[nih_adult_data.Record], count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """`count` indices into `records`, an equal number from each label x view stratum: each
    stratum repeated whole as often as it fits, the remainder drawn without replacement."""
    strata = nih_adult_data.strata(records)
    present = np.unique(strata)
    chosen = []
    for stratum, share in zip(present, np.array_split(np.arange(count), len(present))):
        members = np.flatnonzero(strata == stratum)
        whole, rest = divmod(len(share), len(members))
        chosen += [np.tile(members, whole), rng.choice(members, rest, replace=False)]
    return rng.permutation(np.concatenate(chosen))


def adult_share_count(share: float, paediatric_items: int) -> int:
    """How many adult items make `share` of an epoch next to `paediatric_items`."""
    return round(share / (1 - share) * paediatric_items)


def prepare_data(cfg: dict, limit: int | None = None) -> PreparedData:
    """Verify the data, split it, and decode train/val pixels (optionally the first `limit`).

    The official Kermany test split and the adult test patients are not decoded at all."""
    records = cxr_data.read_manifest()
    cxr_data.verify_images(records)
    splits = cxr_data.make_splits(records, cfg["val_fraction"], cfg["seed"])
    train_records, val_records = splits.train, splits.val
    rng = np.random.default_rng(cfg["seed"])
    if limit is not None:
        train_records = sample(train_records, limit, rng)
        val_records = sample(val_records, max(limit // 4, 8), rng)
    train_pixels = [cxr_data.load_pixels(train_records)]
    train_targets = [cxr_data.labels(train_records)]
    val_pixels = [cxr_data.load_pixels(val_records)]
    val_targets = [cxr_data.labels(val_records)]
    population = [np.full(len(val_records), PAEDIATRIC)]
    view = [np.full(len(val_records), "AP")]
    adult_splits = None
    if cfg.get("adult"):
        adult_records = nih_adult_data.read_manifest()
        adult_splits = nih_adult_data.make_splits(adult_records)
        adult_train, adult_val = adult_splits.train, adult_splits.val
        nih_adult_data.verify_images(adult_train + adult_val)
        if limit is not None:
            adult_train = sample(adult_train, limit, rng)
            adult_val = sample(adult_val, max(limit // 4, 8), rng)
        schedule = adult_schedule(adult_train, adult_share_count(cfg["adult"]["share"],
                                                                 len(train_records)), rng)
        train_pixels.append(nih_adult_data.load_pixels(adult_train, KERMANY_SIZE)[schedule])
        train_targets.append(nih_adult_data.labels(adult_train)[schedule])
        val_pixels.append(nih_adult_data.load_pixels(adult_val, KERMANY_SIZE))
        val_targets.append(nih_adult_data.labels(adult_val))
        population.append(np.full(len(adult_val), ADULT))
        view.append(nih_adult_data.views(adult_val))
    for recorded in cfg.get("site_data", []):  # site training patients only (see site_data)
        pixels, targets = site_data.training_part(
            recorded, KERMANY_SIZE, len(train_records),
            cfg.get("site_share", site_data.SITE_SHARE), rng)
        train_pixels.append(pixels)
        train_targets.append(targets)
    return PreparedData(
        splits, adult_splits,
        RadiographDataset(np.concatenate(train_pixels), np.concatenate(train_targets),
                          augmentations(cfg)),
        RadiographDataset(np.concatenate(val_pixels), np.concatenate(val_targets)),
        ValidationGroups(np.concatenate(population), np.concatenate(view)),
    )


def balanced_pos_weight(targets: np.ndarray) -> float:
    """Weight on positive cases that gives both classes the same total weight in the loss."""
    return float((targets == 0).sum() / max((targets == 1).sum(), 1))


def build_net(cfg: dict, pos_weight: float = 1.0) -> CxrNet:
    net = CxrNet(cfg["image_size"], tuple(cfg["widths"]), pos_weight=pos_weight,
                 max_pool=cfg.get("max_pool", False), equalize=cfg.get("equalize", False))
    if cfg.get("folded_batch_norms"):  # fine-tuned from a bundle member (see cxr_init)
        from clinassist.training.onnx_export import fold_batch_norms

        fold_batch_norms(net.eval()).train()
    return net


def train(config_path: Path | str, output: Path, resume: bool = False,
          limit: int | None = None, epochs: float | None = None,
          init_from: Path | None = None, init_member: int = 0,
          sites: list[Path] | None = None) -> Path:
    """Train and write `output/final/model.safetensors` plus `config.yaml`; return the run dir.

    With `init_from` (a run, or a bundle and one of its members), training starts from those
    weights and takes their architecture; the config records where it started. With `sites`
    (site datasets from `clinassist dataset export`), each site's training patients are added
    to every epoch; its held-out patients are never read (see `site_data`)."""
    overrides = {}
    if init_from is not None:
        overrides = {**cxr_init.source_config(init_from, init_member),
                     "init_from": str(init_from), "init_member": init_member}
    if sites:  # site datasets: their training patients join the pooled training set
        overrides["site_data"] = site_data.recorded_splits(sites)
    cfg = run_config(config_path, output, resume, epochs, overrides)
    data = prepare_data(cfg, limit)
    net = build_net(cfg, pos_weight=balanced_pos_weight(data.train.targets))
    if cfg.get("init_from") and not resume:
        net.load_state_dict(cxr_init.initial_state(Path(cfg["init_from"]), net,
                                                   cfg.get("init_member", 0)))
    fit(net, data.train, data.val, output, cfg, resume, population_metrics(data.val_groups))
    return output


def load_trained(run: Path) -> tuple[CxrNet, dict]:
    cfg = load_config(run / "final" / "config.yaml")
    return load_weights(build_net(cfg), run), cfg
