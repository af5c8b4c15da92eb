"""Train the pixel quality-control model (`clinassist train qc`).

    .venv/bin/clinassist train qc --output runs/qc            # config training/configs/qc.yaml
    .venv/bin/clinassist train qc --output runs/qc --resume   # continue from the newest checkpoint

Two populations of chest radiographs: the Kermany children of the triage model's train split
and the adult NIH train patients (resized to the Kermany 224 px so they stack), each chest item
drawing its population first (`adult_share`), so the 557 adult images are not drowned by the
4,564 children. Validation holds each population's validation part as its own fixed item set,
and each population's accuracy is reported (`worst_accuracy` selects the checkpoint). The
Kermany official test split and the NIH test patients are never loaded here: they are for
`clinassist evaluate qc` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import ConcatDataset

from clinassist.training import cxr_data, nih_adult_data, qc_data
from clinassist.training.cxr_populations import ADULT, PAEDIATRIC
from clinassist.training.qc_model import QcNet
from clinassist.training.trainer import fit, load_config, load_weights, run_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "qc.yaml"
KERMANY_SIZE = 224  # the Kermany images' size; adult images are resized to it to stack


def population_metrics(population: np.ndarray):
    """Accuracy over the 7 classes and false rejection (a frontal radiograph called anything
    else) per population; `worst_accuracy` is the lower population's accuracy. `population`
    names the population of each validation item, in order."""
    def compute(prediction) -> dict:
        predicted, truth = prediction.predictions.argmax(1), prediction.label_ids
        out = {"accuracy": float(np.mean(predicted == truth))}
        for name in np.unique(population):
            part = population == name
            frontal = part & (truth == qc_data.ACCEPTED_CLASS)
            out[f"accuracy_{name}"] = float(np.mean(predicted[part] == truth[part]))
            out[f"false_rejection_{name}"] = float(np.mean(predicted[frontal] != truth[frontal]))
        out["worst_accuracy"] = min(out[f"accuracy_{name}"] for name in np.unique(population))
        return out
    return compute


def build_net(cfg: dict) -> QcNet:
    return QcNet(cfg["image_size"], tuple(cfg["widths"]))


@dataclass
class QcData:
    train: qc_data.QcDataset
    val: ConcatDataset
    val_population: np.ndarray  # the population of each validation item, in order


def prepare_data(cfg: dict, limit: int | None = None) -> QcData:
    """Training items from both populations' train parts, validation items from their
    validation parts (optionally the first `limit` train images of each population)."""
    splits = cxr_data.make_splits(cxr_data.read_manifest(), cfg["val_fraction"], cfg["seed"])
    adult = nih_adult_data.make_splits(nih_adult_data.read_manifest())
    kermany_train = splits.train[:limit] if limit else splits.train
    adult_train = adult.train[:limit] if limit else adult.train
    cxr_data.verify_images(kermany_train + splits.val)
    nih_adult_data.verify_images(adult_train + adult.val)
    share = cfg["adult_share"]
    negatives = qc_data.other_modality_images("train")
    scale = (limit / len(splits.train)) if limit else 1.0
    train_items, val_items = (max(int(cfg[key] * scale), 14)
                              for key in ("train_items", "val_items"))
    train = qc_data.QcDataset(
        [qc_data.ChestPool(PAEDIATRIC, cxr_data.load_pixels(kermany_train), 1 - share),
         qc_data.ChestPool(ADULT, nih_adult_data.load_pixels(adult_train, KERMANY_SIZE), share)],
        negatives, train_items, cfg["seed"], True)
    val_pools = [qc_data.ChestPool(PAEDIATRIC, cxr_data.load_pixels(splits.val), 1.0),
                 qc_data.ChestPool(ADULT, nih_adult_data.load_pixels(adult.val, KERMANY_SIZE), 1.0)]
    # One fixed item set per population (seeds differ so their negative items differ too).
    val = ConcatDataset([qc_data.QcDataset([pool], negatives, val_items, cfg["seed"] + k, False)
                         for k, pool in enumerate(val_pools)])
    return QcData(train, val, np.repeat([pool.population for pool in val_pools], val_items))


def train(config_path: Path | str, output: Path, resume: bool = False,
          limit: int | None = None, epochs: float | None = None) -> Path:
    cfg = run_config(config_path, output, resume, epochs)
    data = prepare_data(cfg, limit)
    fit(build_net(cfg), data.train, data.val, output, cfg, resume,
        population_metrics(data.val_population))
    return output


def load_trained(run: Path) -> tuple[QcNet, dict]:
    cfg = load_config(run / "final" / "config.yaml")
    return load_weights(build_net(cfg), run), cfg
