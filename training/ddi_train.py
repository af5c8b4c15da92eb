"""Train the interaction model on each DrugBank-86 split (`clinassist train ddi`).

    clinassist train ddi --output runs/ddi             # S1, then S2/S3 (one run: same training)
    clinassist train ddi --output runs/ddi --resume    # continue from the newest checkpoints
    clinassist train ddi --split s1 --limit 2000 --epochs 1 --output runs/smoke

One item is one ordered pair: every DrugBank-86 training row teaches its type; the matched
pairs (`ddi_negatives`) also teach existence. The shared `transformers.Trainer` loop
(`training.trainer.fit`) gives checkpoints, resume and the best epoch by validation loss. Items
are drug indices; features and neighbour lists are looked up inside the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import Dataset

from clinassist import config
from clinassist.training import ddi_data, ddi_features, ddi_negatives, ddi_sources
from clinassist.training.ddi_model import DdiNet, DdiTraining
from clinassist.training.trainer import fit, load_config, load_weights, run_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "ddi.yaml"
PARTS = {"train": ddi_data.TRAIN, "val": ddi_data.VAL, "test": ddi_data.TEST}


@dataclass
class Prepared:
    """What every split shares: the sources, the matched task and (for training and export)
    the drug features."""

    sources: ddi_sources.Sources
    task: ddi_negatives.BinaryTask
    features: ddi_features.DrugFeatures | None

    @property
    def types(self) -> int:
        return len(self.sources.benchmark.types)


def prepare(cfg: dict, with_features: bool = True) -> Prepared:
    """Sources, matched task and drug features; the features (minutes of RDKit) are cached in
    `CLINASSIST_HOME/cache` and reused while the drugs, settings and feature code are
    unchanged."""
    sources = ddi_sources.load()
    task = ddi_negatives.binary_task(sources, ddi_negatives.NegativeConfig.of(cfg))
    if not with_features:
        return Prepared(sources, task, None)
    universe = sources.universe
    smiles = [d.smiles for d in universe.drugs]
    key = ddi_features.cache_key(smiles, sources.atc, cfg["features"])
    cache = config.home_dir() / "cache" / f"ddi_features-{key[:24]}.npz"
    features = ddi_features.load_features(cache, key)
    if features is None:
        features = ddi_features.drug_features(smiles, sources.atc,
                                              np.flatnonzero(universe.drugbank86), cfg["features"])
        cache.parent.mkdir(parents=True, exist_ok=True)
        ddi_features.save_features(cache, features, key)
    return Prepared(sources, task, features)


@dataclass
class Items:
    """Ordered pairs for the model: existence label (1, 0, or -1 outside the matched task)
    and type (0-based, -1 for negatives)."""

    first: np.ndarray
    second: np.ndarray
    labels_exist: np.ndarray
    labels_type: np.ndarray

    def __len__(self) -> int:
        return len(self.first)

    def sample(self, count: int | None, seed: int) -> Items:
        if count is None or count >= len(self):
            return self
        rows = np.sort(np.random.default_rng(seed).permutation(len(self))[:count])
        return Items(self.first[rows], self.second[rows], self.labels_exist[rows],
                     self.labels_type[rows])


@dataclass
class SplitPairs:
    """A split's benchmark parts and matched pairs per part (what evaluation needs)."""

    split: ddi_data.Split
    binary: dict[int, ddi_negatives.LabelledPairs]  # part -> matched pairs
    training_degree: np.ndarray  # per universe drug, partners among the training positives

    def benchmark(self, part: int) -> ddi_data.Pairs:
        return {ddi_data.TRAIN: self.split.train, ddi_data.VAL: self.split.val,
                ddi_data.TEST: self.split.test}[part]


@dataclass
class SplitData(SplitPairs):
    """With the reference drugs' neighbour lists, interaction table and model items."""

    neighbours: ddi_features.Neighbours
    table: np.ndarray  # (references, references) uint8: 0 none, t + 1 type t (row drug first)
    items: dict[int, Items]  # part -> model items

    @property
    def reference_index(self) -> np.ndarray:
        """Per universe drug, its index among the references (-1: not a reference)."""
        index = np.full(len(self.neighbours.seen), -1)
        index[self.neighbours.references] = np.arange(len(self.neighbours.references))
        return index


def split_of(data: ddi_data.DrugBank86, cfg: dict, split: str) -> ddi_data.Split:
    return ddi_data.make_split(data.pairs, split, cfg["seed"], cfg["test_fraction"],
                               cfg["val_fraction"], cfg["val_drug_fraction"])


def reference_table(train: ddi_data.Pairs, others: ddi_negatives.LabelledPairs,
                    reference_index: np.ndarray, types: int) -> np.ndarray:
    """The training positives between reference drugs: DrugBank-86 rows as type + 1 (row drug
    first), then the other sources' pairs (both orders) as `types + 1` where nothing is set."""
    references = int(reference_index.max()) + 1
    table = np.zeros((references, references), np.uint8)
    for a, b in ((others.first, others.second), (others.second, others.first)):
        table[reference_index[a], reference_index[b]] = types + 1
    table[reference_index[train.first], reference_index[train.second]] = train.classes + 1
    return table


def part_items(benchmark: ddi_data.Pairs, binary: ddi_negatives.LabelledPairs) -> Items:
    """The matched pairs, then every other benchmark row of the part (type only)."""
    ordered = benchmark.first.astype(np.int64) * (1 << 20) + benchmark.second
    matched = binary.first.astype(np.int64) * (1 << 20) + binary.second
    rest = ~np.isin(ordered, matched[binary.label == 1])
    return Items(np.concatenate([binary.first, benchmark.first[rest]]),
                 np.concatenate([binary.second, benchmark.second[rest]]),
                 np.concatenate([binary.label, np.full(rest.sum(), -1)]),
                 np.concatenate([binary.classes, benchmark.classes[rest]]))


def split_pairs(prepared: Prepared, cfg: dict, name: str) -> SplitPairs:
    split = split_of(prepared.sources.benchmark, cfg, name)
    return SplitPairs(split, ddi_negatives.split_binary(prepared.task, split, cfg),
                      ddi_negatives.training_degree(split.train, len(prepared.sources.universe)))


def split_data(prepared: Prepared, cfg: dict, name: str) -> SplitData:
    """The split with its references (the training drugs), their table, and the items."""
    pairs = split_pairs(prepared, cfg, name)
    split = pairs.split
    references = np.flatnonzero(split.drug_parts(len(split.train.drugs)) == ddi_data.TRAIN)
    neighbours = ddi_features.neighbours(prepared.features.morgan, references,
                                         cfg["features"]["neighbours"])
    index = np.full(len(prepared.sources.universe), -1)
    index[references] = np.arange(len(references))
    items = {p: part_items(pairs.benchmark(p), pairs.binary[p])
             for p in (ddi_data.TRAIN, ddi_data.VAL, ddi_data.TEST)}
    positives = prepared.task.positives
    others = positives.take(np.flatnonzero(
        (positives.classes < 0)
        & (ddi_negatives.pair_parts(positives, split, cfg) == ddi_data.TRAIN)))
    return SplitData(split, pairs.binary, pairs.training_degree, neighbours,
                     reference_table(split.train, others, index, prepared.types), items)


class ItemDataset(Dataset):
    def __init__(self, items: Items) -> None:
        self.tensors = {name: torch.from_numpy(getattr(items, name).astype(np.int64))
                        for name in ("first", "second", "labels_exist", "labels_type")}

    def __len__(self) -> int:
        return len(self.tensors["first"])

    def __getitem__(self, i: int) -> dict:
        return {name: tensor[i] for name, tensor in self.tensors.items()}


def build_model(prepared: Prepared, data: SplitData, cfg: dict) -> DdiTraining:
    nb = data.neighbours
    net = DdiNet(prepared.features.width, torch.from_numpy(data.table), cfg["network"],
                 prepared.types)
    return DdiTraining(net, torch.from_numpy(prepared.features.values),
                       torch.from_numpy(data.reference_index),
                       (torch.from_numpy(nb.seen), torch.from_numpy(nb.seen_similarity)),
                       (torch.from_numpy(nb.unseen), torch.from_numpy(nb.unseen_similarity)),
                       cfg["unseen_rate"], cfg["type_weight"])


def pair_metrics(prediction) -> dict:
    """Validation existence AUROC (matched pairs) and type accuracy (positives)."""
    existence, types = prediction.predictions[:2]
    labels_exist, labels_type = prediction.label_ids
    binary, typed = labels_exist >= 0, labels_type >= 0
    return {"existence_auroc": float(roc_auc_score(labels_exist[binary], existence[binary])),
            "type_accuracy": float(np.mean(types[typed].argmax(1) == labels_type[typed]))}


def run_of(output: Path, split: str) -> Path:
    """S2 and S3 share one training set (the pairs of two training drugs) and so one run."""
    return output / ("s1" if split == "s1" else "s2s3")


def train(config_path: Path | str, output: Path, resume: bool = False, limit: int | None = None,
          epochs: float | None = None, split: str | None = None,
          seed: int | None = None) -> Path:
    """Train the run for one split, or both runs (S1, and S2/S3) when `split` is None.
    `limit` trains and validates on that many items (smoke runs); `seed` replaces the
    configured one (a resumed run keeps its own)."""
    cfg = run_config(config_path, output, resume, epochs,
                     {"seed": seed} if seed is not None else None)
    prepared = prepare(cfg)
    for name in [split] if split else ("s1", "s2"):
        run = run_of(output, name)
        run_config(output / "config.yaml", run, resume, epochs)
        data = split_data(prepared, cfg, name)
        fit(build_model(prepared, data, cfg),
            ItemDataset(data.items[ddi_data.TRAIN].sample(limit, cfg["seed"])),
            ItemDataset(data.items[ddi_data.VAL].sample(limit, cfg["seed"])),
            run, cfg, resume, pair_metrics)
    return output


def load_trained(run: Path, prepared: Prepared, name: str) -> tuple[DdiTraining, SplitData]:
    """A trained run's model (eval mode) with the split data it was trained on."""
    cfg = load_config(run / "final" / "config.yaml")
    data = split_data(prepared, cfg, name)
    return load_weights(build_model(prepared, data, cfg), run), data
