"""The "no known interaction" class: pairs the sources know well and none of them lists.

A drug is *well known* when DrugBank-86, DDInter and the union of all sources each list many
partners for it (config `negatives.min_degree_*`): only then does a source's silence about a
pair say something. A negative is a pair of two well-known DrugBank-86 drugs that no source
lists in either order, under any reading of the names (`ddi_sources`, `generous`). A positive
is a pair of two well-known drugs that a source lists: DrugBank-86 (which also gives the
interaction type), DDInter with a known level, or the ANSM thesaurus.

Degree matching. Popular drugs interact with more drugs, so a model could separate random
negatives from positives by popularity alone. Each drug's DrugBank-86 degree and union degree
are cut into quantile bins (`DegreeCells`); each unordered pair of drug bins is a *cell*; in
every cell the same number of positives and negatives is kept (`negatives_per_positive` negatives per positive, as many as the cell
holds). Inside the matched set degree says (almost) nothing: `degree_baseline` measures it.
Positives of a cell short of negatives are not part of the binary task; they still teach the
interaction type.

Why one negative per positive: the cells of the most-connected drugs hold fewer negatives than
positives already, so a higher ratio would drop more positives of exactly the drugs
pharmacists use most; and 1:1 is the ratio of the published binary figures (DSN-DDI) the
issue compares against. The false-alarm rate is measured on negatives alone, so it does not
depend on the ratio.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np

from clinassist.training import ddi_data
from clinassist.training.ddi_sources import Pair, Sources


@dataclass(frozen=True)
class NegativeConfig:
    min_degree_union: int
    min_degree_drugbank86: int
    min_degree_ddinter: int
    degree_bins: int
    negatives_per_positive: float
    seed: int

    @classmethod
    def of(cls, cfg: dict) -> NegativeConfig:
        return cls(**cfg["negatives"], seed=cfg["seed"])


@dataclass
class LabelledPairs:
    """Unordered pairs (universe rows, in the order the model sees them) with an existence
    label (1 listed by DrugBank-86, 0 a negative) and, for positives, the DrugBank-86 class
    (0-based; -1 for negatives)."""

    first: np.ndarray
    second: np.ndarray
    label: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def take(self, rows: np.ndarray) -> LabelledPairs:
        return LabelledPairs(self.first[rows], self.second[rows], self.label[rows],
                             self.classes[rows])

    @classmethod
    def concat(cls, parts: list[LabelledPairs]) -> LabelledPairs:
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("first", "second", "label", "classes")))

    def keys(self) -> np.ndarray:
        """One int64 per unordered pair (order-free), for set operations."""
        return pair_keys(self.first, self.second)

    def sha256(self) -> str:
        lines = sorted(f"{a},{b},{y}" for a, b, y in zip(np.minimum(self.first, self.second),
                                                        np.maximum(self.first, self.second),
                                                        self.label))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def pair_keys(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    low, high = np.minimum(first, second).astype(np.int64), np.maximum(first, second)
    return low * (1 << 20) + high


def keys_of(pairs: set[Pair]) -> np.ndarray:
    if not pairs:
        return np.array([], dtype=np.int64)
    rows = np.fromiter(itertools.chain.from_iterable(pairs), dtype=np.int64).reshape(-1, 2)
    return np.sort(pair_keys(rows[:, 0], rows[:, 1]))  # as from the sorted pairs


@dataclass
class DegreeCells:
    """Each drug's *degree state*: the quantile bin of its log DrugBank-86 degree and the bin of
    its log union degree (both over the well-known drugs); a pair's *cell* is its unordered
    pair of states. Matching on both matters: with the union degree alone, the DrugBank-86
    degree still separated the classes (baseline AUROC 0.60 on S1)."""

    drugbank86_degree: np.ndarray  # per universe drug
    union_degree: np.ndarray
    drugbank86_edges: np.ndarray
    union_edges: np.ndarray

    def state(self, rows: np.ndarray) -> np.ndarray:
        a = np.searchsorted(self.drugbank86_edges, np.log1p(self.drugbank86_degree[rows]),
                            side="right")
        b = np.searchsorted(self.union_edges, np.log1p(self.union_degree[rows]), side="right")
        return a * (len(self.union_edges) + 1) + b

    def cell(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        a, b = self.state(first), self.state(second)
        states = (len(self.drugbank86_edges) + 1) * (len(self.union_edges) + 1)
        return np.minimum(a, b) * states + np.maximum(a, b)


def well_known(sources: Sources, cfg: NegativeConfig) -> np.ndarray:
    """Per universe drug: a DrugBank-86 drug that every source knows well."""
    degrees = sources.listed.degrees(len(sources.universe))
    return (sources.universe.drugbank86 & (degrees["union"] >= cfg.min_degree_union)
            & (degrees["drugbank86"] >= cfg.min_degree_drugbank86)
            & (degrees["ddinter"] >= cfg.min_degree_ddinter))


def degree_cells(sources: Sources, known: np.ndarray, bins: int) -> DegreeCells:
    degrees = sources.listed.degrees(len(sources.universe))
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    edges = {name: np.quantile(np.log1p(degrees[name][known]), quantiles)
             for name in ("drugbank86", "union")}
    return DegreeCells(degrees["drugbank86"], degrees["union"], edges["drugbank86"],
                       edges["union"])


def candidate_negatives(sources: Sources, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair of well-known drugs that no source lists under any reading."""
    rows = np.flatnonzero(known)
    i, j = np.triu_indices(len(rows), k=1)
    first, second = rows[i], rows[j]
    silent = ~np.isin(pair_keys(first, second), keys_of(sources.listed.generous))
    return first[silent], second[silent]


def matched_sample(cells_positive: np.ndarray, cells_negative: np.ndarray, ratio: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows of positives and of negatives to keep so that every cell holds `ratio` negatives
    per positive: n positives and round(ratio * n) negatives, n as large as the cell allows."""
    keep_positive, keep_negative = [], []
    for cell in np.unique(cells_positive):
        positives = np.flatnonzero(cells_positive == cell)
        negatives = np.flatnonzero(cells_negative == cell)
        count = min(len(positives), int(len(negatives) / ratio))
        keep_positive.append(rng.choice(positives, count, replace=False))
        keep_negative.append(rng.choice(negatives, int(round(count * ratio)), replace=False))
    return np.sort(np.concatenate(keep_positive)), np.sort(np.concatenate(keep_negative))


@dataclass
class BinaryTask:
    """The matched existence task over DrugBank-86 drugs, before any split."""

    pairs: LabelledPairs  # the matched positives, then the matched negatives
    positives: LabelledPairs  # every listed pair of two well-known drugs (matched or not)
    cells: DegreeCells
    known: np.ndarray
    candidates: int  # unlisted pairs of well-known drugs, before matching


def drugbank86_positives(sources: Sources, known: np.ndarray) -> LabelledPairs:
    """DrugBank-86 rows of two well-known drugs, one per unordered pair (the first listed
    order keeps its class; 117 pairs are listed in both orders)."""
    pairs = sources.benchmark.pairs
    row = np.array([sources.universe.row[d] for d in pairs.drugs])
    first, second = row[pairs.first], row[pairs.second]
    keep = known[first] & known[second]
    keys = pair_keys(first, second)
    _, unique = np.unique(np.where(keep, keys, -1), return_index=True)
    rows = np.sort(unique[keep[unique]])
    return LabelledPairs(first[rows], second[rows], np.ones(len(rows), dtype=np.int64),
                         pairs.classes[rows])


def listed_positives(sources: Sources, known: np.ndarray, rng: np.random.Generator
                     ) -> LabelledPairs:
    """Every pair of two well-known drugs that any source lists (names joined strictly):
    DrugBank-86's with their class, then DDInter's (known level) and ANSM's others, class -1,
    in a random order (existence has none)."""
    drugbank86 = drugbank86_positives(sources, known)
    listed = sources.listed
    others = np.array(sorted((listed.ddinter | listed.ansm) - listed.drugbank86),
                      dtype=np.int64).reshape(-1, 2)
    others = others[known[others[:, 0]] & known[others[:, 1]]]
    swap = rng.random(len(others)) < 0.5
    first = np.where(swap, others[:, 1], others[:, 0])
    second = np.where(swap, others[:, 0], others[:, 1])
    return LabelledPairs.concat([drugbank86, LabelledPairs(
        first, second, np.ones(len(others), np.int64), np.full(len(others), -1))])


def binary_task(sources: Sources, cfg: NegativeConfig) -> BinaryTask:
    rng = np.random.default_rng(cfg.seed)
    known = well_known(sources, cfg)
    cells = degree_cells(sources, known, cfg.degree_bins)
    positives = listed_positives(sources, known, rng)
    first, second = candidate_negatives(sources, known)
    swap = rng.random(len(first)) < 0.5  # negatives have no order: show both at random
    first, second = np.where(swap, second, first), np.where(swap, first, second)
    keep_pos, keep_neg = matched_sample(cells.cell(positives.first, positives.second),
                                        cells.cell(first, second), cfg.negatives_per_positive,
                                        rng)
    negatives = LabelledPairs(first[keep_neg], second[keep_neg],
                              np.zeros(len(keep_neg), dtype=np.int64),
                              np.full(len(keep_neg), -1))
    return BinaryTask(LabelledPairs.concat([positives.take(keep_pos), negatives]), positives,
                      cells, known, len(first))


def key_uniform(keys: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per pair key (splitmix64 of key and seed): a pair's draw
    depends on nothing else, so any subset of pairs gets the same parts."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def pair_parts(pairs: LabelledPairs, split: ddi_data.Split, cfg: dict) -> np.ndarray:
    """The part (TRAIN, VAL, TEST, UNUSED) of each pair in a split. S1: a DrugBank-86 positive
    goes where the benchmark split put its row; any other pair to a part drawn from its key with
    the same fractions (`key_uniform`). S2/S3: every pair by its drugs
    (`ddi_data.part_by_drugs`). Universe rows of DrugBank-86 drugs are the benchmark's drug
    indices."""
    if split.name != "s1":
        drug_part = split.drug_parts(len(split.train.drugs))
        return ddi_data.part_by_drugs(split.name, drug_part[pairs.first], drug_part[pairs.second])
    member = np.stack([np.isin(pairs.keys(), pair_keys(rows.first, rows.second))
                       for rows in (split.train, split.val, split.test)])
    # a pair listed in both orders whose rows fell into two parts is left out
    part = np.where(member.sum(axis=0) == 1, member.argmax(axis=0), ddi_data.UNUSED)
    drawn = key_uniform(pairs.keys(), cfg["seed"])
    test, val = cfg["test_fraction"], cfg["test_fraction"] + (1 - cfg["test_fraction"]) * \
        cfg["val_fraction"]
    random_part = np.where(drawn < test, ddi_data.TEST,
                           np.where(drawn < val, ddi_data.VAL, ddi_data.TRAIN))
    not_drugbank86 = pairs.classes < 0  # negatives and the other sources' positives
    part[not_drugbank86] = random_part[not_drugbank86]
    return part


def split_binary(task: BinaryTask, split: ddi_data.Split, cfg: dict) -> dict[int, LabelledPairs]:
    """The matched pairs of each part (TRAIN, VAL, TEST) of a split (see `pair_parts`)."""
    part = pair_parts(task.pairs, split, cfg)
    return {p: task.pairs.take(np.flatnonzero(part == p))
            for p in (ddi_data.TRAIN, ddi_data.VAL, ddi_data.TEST)}


def degree_features(union_degree: np.ndarray, drugbank86_degree: np.ndarray,
                    first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The degree-only baseline's inputs: both drugs' log union degree and log degree among the
    training positives, each pair of values sorted (existence has no order)."""
    columns = []
    for degree in (union_degree, drugbank86_degree):
        a, b = np.log1p(degree[first]), np.log1p(degree[second])
        columns += [np.minimum(a, b), np.maximum(a, b)]
    return np.stack(columns, axis=1)


def training_degree(pairs: ddi_data.Pairs, drugs: int) -> np.ndarray:
    """Distinct partners of each drug among a split's training positives."""
    keys = np.unique(pair_keys(pairs.first, pairs.second))
    counts = np.zeros(drugs, dtype=np.int64)
    np.add.at(counts, keys >> 20, 1)
    np.add.at(counts, keys & ((1 << 20) - 1), 1)
    return counts
