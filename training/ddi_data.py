"""DrugBank-86 (the DeepDDI benchmark): pairs, interaction types, drug fingerprints and the
project's splits S1 (random pairs), S2 (one drug unseen) and S3 (both drugs unseen).

The interaction types are directional ("#Drug1 may increase the ... of #Drug2"; the 117 pairs
listed in both orders always carry different types), so a pair keeps its order throughout.
Which placeholder a pair's first drug fills depends on the type's `Subject` column: 2 means
the first drug is #Drug2 (midazolam, ketoconazole -> 73 "The serum concentration of #Drug2 can
be increased when it is combined with #Drug1" is about midazolam), 1 and 3 that it is #Drug1
(rifampicin, warfarin -> 4 "The metabolism of #Drug2 can be increased ...").
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from clinassist import config
from clinassist.bundle import file_sha256
from clinassist.errors import ClinassistError

DATASET_FOLDER = "ddi_drugbank86"
SOURCE = "DeepDDI DrugBank-86 (Ryu et al., PNAS 2018) as staged by SumGNN and SSI-DDI"
LICENCE = "CC BY-NC 4.0 (DrugBank data: non-commercial use only)"
PAIRS_FILE = "drugbank_ddi_86.tsv"
SMILES_FILE = "drug_smiles.csv"
TYPES_FILE = "interaction_types_86.csv"
FILES = (PAIRS_FILE, SMILES_FILE, TYPES_FILE)
SPLITS = ("s1", "s2", "s3")
SPLIT_NAMES = {"s1": "S1 random pairs", "s2": "S2 one drug unseen", "s3": "S3 both drugs unseen"}


class DdiDataError(ClinassistError):
    """DrugBank-86 is missing or its files do not match SHA256SUMS."""


def dataset_root() -> Path:
    return config.data_dir() / DATASET_FOLDER


def verify_files(root: Path) -> dict[str, str]:
    """The SHA-256 of each file used, checked against the dataset's SHA256SUMS."""
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        raise DdiDataError(f"DrugBank-86 not found at {root} (no SHA256SUMS); set CLINASSIST_DATA "
                           f"to the folder holding {DATASET_FOLDER}/ (see datasets/)")
    expected = {name: digest for digest, name in (line.split() for line in
                                                  sums.read_text().splitlines() if line.strip())}
    for name in FILES:
        if not (root / name).is_file():
            raise DdiDataError(f"{root / name} is missing")
        if file_sha256(root / name) != expected.get(name):
            raise DdiDataError(f"{root / name} does not match its SHA-256 in {sums}")
    return {name: expected[name] for name in FILES}


@dataclass(frozen=True)
class InteractionType:
    label: int  # DrugBank-86 `Label` = the `Interaction type` column, 1..86
    sentence: str  # with #Drug1 and #Drug2 placeholders
    first_is_drug2: bool  # `Subject` 2: the pair's first drug is the sentence's #Drug2


def read_types(root: Path) -> list[InteractionType]:
    """The 86 types ordered by label, mapped through `Interaction type` (not `DDI type N`)."""
    with open(root / TYPES_FILE, newline="") as handle:
        types = [InteractionType(int(row["Interaction type"]), row["Description"],
                                 row["Subject"] == "2") for row in csv.DictReader(handle)]
    return sorted(types, key=lambda t: t.label)


def read_smiles(root: Path) -> dict[str, str]:
    with open(root / SMILES_FILE, newline="") as handle:
        return {row["drug_id"]: row["smiles"] for row in csv.DictReader(handle)}


@dataclass
class Pairs:
    """Drug pairs as indices into `drugs`, with 0-based classes (DrugBank label - 1)."""

    drugs: list[str]
    first: np.ndarray
    second: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)

    def take(self, rows: np.ndarray) -> "Pairs":
        return Pairs(self.drugs, self.first[rows], self.second[rows], self.classes[rows])

    def sample(self, count: int | None, seed: int = 0) -> "Pairs":
        """`count` pairs drawn at random (all when None): the files are sorted by type."""
        if count is None or count >= len(self):
            return self
        return self.take(np.sort(np.random.default_rng(seed).permutation(len(self))[:count]))

    def sha256(self) -> str:
        lines = sorted(f"{self.drugs[a]},{self.drugs[b]},{c + 1}"
                       for a, b, c in zip(self.first, self.second, self.classes))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_pairs(root: Path, drugs: list[str]) -> Pairs:
    """Every benchmark row whose two drugs have a SMILES (1,704 of the 1,710 drugs)."""
    index = {drug: i for i, drug in enumerate(drugs)}
    first, second, classes = [], [], []
    with open(root / PAIRS_FILE, newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["drug1"] in index and row["drug2"] in index:
                first.append(index[row["drug1"]])
                second.append(index[row["drug2"]])
                classes.append(int(row["Label"]) - 1)
    return Pairs(drugs, np.array(first), np.array(second), np.array(classes))


TRAIN, VAL, TEST, UNUSED = 0, 1, 2, -1  # the part a pair belongs to in a split


@dataclass
class Split:
    """One split of the benchmark's pairs, and (S2/S3) which drugs each part may hold."""

    name: str
    train: Pairs
    val: Pairs
    test: Pairs
    new_drugs: np.ndarray  # drug indices held out of training and validation (empty for S1)
    val_drugs: np.ndarray  # S2/S3: drug indices held out of training for validation

    def drug_parts(self, drugs: int) -> np.ndarray:
        """Per drug: TRAIN, VAL (a validation drug) or TEST (a new drug); all TRAIN for S1."""
        parts = np.full(drugs, TRAIN)
        parts[self.val_drugs] = VAL
        parts[self.new_drugs] = TEST
        return parts


def part_by_drugs(name: str, first_part: np.ndarray, second_part: np.ndarray) -> np.ndarray:
    """S2/S3: the part of each pair from its drugs' parts. Training pairs have two training
    drugs; validation pairs at least one validation drug and no new drug; S2 test pairs one new
    drug and one training drug, S3 test pairs two new drugs; other pairs are UNUSED."""
    new = (first_part == TEST).astype(int) + (second_part == TEST)
    val = (first_part == VAL).astype(int) + (second_part == VAL)
    part = np.full(len(first_part), UNUSED)
    part[(new == 0) & (val == 0)] = TRAIN
    part[(new == 0) & (val > 0)] = VAL
    part[(new == 1) & (val == 0)] = TEST if name == "s2" else UNUSED
    part[new == 2] = TEST if name == "s3" else UNUSED
    return part


def part_at_random(count: int, rng: np.random.Generator, test_fraction: float,
                   val_fraction: float) -> np.ndarray:
    """S1: `test_fraction` of the pairs for test, `val_fraction` of the rest for validation."""
    order = rng.permutation(count)
    cut = int(count * test_fraction)
    part = np.full(count, TRAIN)
    part[order[:cut]] = TEST
    rest = rng.permutation(order[cut:])
    part[rest[: int(len(rest) * val_fraction)]] = VAL
    return part


def make_split(pairs: Pairs, name: str, seed: int, test_fraction: float,
               val_fraction: float, val_drug_fraction: float = 0.0) -> Split:
    """S1: pairs drawn at random. S2/S3: drugs split 4:1 into training and new drugs, and
    `val_drug_fraction` of the training drugs held out for validation (see `part_by_drugs`),
    so that validation, like the test, measures drugs the model has not seen."""
    rng = np.random.default_rng(seed)
    none = np.array([], dtype=int)
    if name == "s1":
        part, new, val = part_at_random(len(pairs), rng, test_fraction, val_fraction), none, none
    else:
        drugs = len(pairs.drugs)
        new = np.sort(rng.permutation(drugs)[: drugs // 5])
        rest = np.setdiff1d(np.arange(drugs), new)
        val = np.sort(rng.permutation(rest)[: int(len(rest) * val_drug_fraction)])
        split = Split(name, pairs, pairs, pairs, new, val)
        parts = split.drug_parts(drugs)
        part = part_by_drugs(name, parts[pairs.first], parts[pairs.second])
    return Split(name, *(pairs.take(np.flatnonzero(part == p)) for p in (TRAIN, VAL, TEST)),
                 new, val)


def morgan_fingerprints(smiles: list[str], radius: int, bits: int) -> np.ndarray:
    """(drugs, bits) uint8 Morgan (ECFP-like) bit vectors; training-only (needs RDKit)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    table = np.zeros((len(smiles), bits), dtype=np.uint8)
    for row, text in enumerate(smiles):
        molecule = Chem.MolFromSmiles(text)
        if molecule is None:
            raise DdiDataError(f"RDKit cannot parse the SMILES of drug {row}: {text[:60]}")
        table[row] = generator.GetFingerprintAsNumPy(molecule)
    return table


@dataclass
class DrugBank86:
    root: Path
    file_sha256: dict[str, str]
    types: list[InteractionType]
    drugs: list[str]
    smiles: list[str]
    pairs: Pairs


def load(root: Path | None = None) -> DrugBank86:
    root = root or dataset_root()
    hashes = verify_files(root)
    smiles = read_smiles(root)
    drugs = sorted(smiles)
    return DrugBank86(root, hashes, read_types(root), drugs, [smiles[d] for d in drugs],
                      read_pairs(root, drugs))


class PairDataset(Dataset):
    """Items `{"drug1": fingerprint, "drug2": fingerprint, "labels": class}` for the Trainer."""

    def __init__(self, pairs: Pairs, fingerprints: np.ndarray) -> None:
        self.fingerprints = torch.from_numpy(fingerprints.astype(np.float32))
        self.first = torch.from_numpy(pairs.first)
        self.second = torch.from_numpy(pairs.second)
        self.classes = torch.from_numpy(pairs.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int) -> dict:
        return {"drug1": self.fingerprints[self.first[i]],
                "drug2": self.fingerprints[self.second[i]], "labels": self.classes[i]}
