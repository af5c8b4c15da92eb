"""Per-drug inputs of the interaction model, computed with RDKit at training and export time
only (serving reads the stored table).

Each drug (the parent molecule: largest fragment of its SMILES) becomes one vector:
- Morgan bits (ECFP-like, radius 2), MACCS keys (167) and ErG pharmacophore counts (315, log1p);
- RDKit's 43 C++ molecular properties (`rdMolDescriptors.Properties`: weight, logP, TPSA,
  H-bond donors and acceptors, rings, stereocentres, connectivity and shape indices), sign-log
  transformed, centred and scaled by the median and interquartile range of the DrugBank-86
  drugs, clipped to +-5. (The Python descriptor list costs minutes per large drug here: 89 s
  for one of 295 atoms.)
- WHO ATC classes at levels 1-4 (multi-hot over classes that at least `atc_min_drugs` drugs
  hold). The WHO ATC index is CC BY-NC-SA (non-commercial): fine inside this non-commercial
  model, and `atc: false` in a config leaves it out.

`Neighbours` are the structural analogues the model reasons with (DeepDDI's structural
similarity profile, kept sparse): for each drug, its `k` most similar *reference* drugs (the
training drugs of a split) by Tanimoto similarity of the Morgan bits. A reference drug has two
lists: `seen` starts with itself (similarity 1), `unseen` leaves itself out, so that training
can show a drug as if it were new.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DESCRIPTOR_CLIP = 5.0


@dataclass(frozen=True)
class FeatureSpec:
    """How raw RDKit values become the encoder's input: everything fitted on the training
    drugs, stored in the bundle so that a drug's features can be recomputed exactly."""

    morgan_bits: int
    descriptor_names: list[str]
    descriptor_median: list[float]
    descriptor_spread: list[float]
    atc_classes: list[str]  # empty: no ATC block

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class DrugFeatures:
    """(drugs, width) float32 features, which columns each block holds, and the spec."""

    values: np.ndarray
    blocks: dict[str, tuple[int, int]]  # block -> [start, stop) columns
    spec: FeatureSpec
    morgan: np.ndarray  # (drugs, bits) uint8, for similarity

    @property
    def width(self) -> int:
        return self.values.shape[1]


def parent_molecule(smiles: str):
    from rdkit import Chem
    from rdkit.Chem.MolStandardize import rdMolStandardize

    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles[:60]}")
    return rdMolStandardize.LargestFragmentChooser().choose(molecule)


def structure_blocks(smiles: list[str], bits: int) -> dict[str, np.ndarray]:
    """Morgan, MACCS, ErG and raw descriptors of each SMILES (RDKit)."""
    from rdkit import RDLogger
    from rdkit.Chem import MACCSkeys, rdFingerprintGenerator, rdMolDescriptors, rdReducedGraphs

    RDLogger.DisableLog("rdApp.*")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=bits)
    properties = rdMolDescriptors.Properties()
    names = list(properties.GetPropertyNames())
    out = {"morgan": np.zeros((len(smiles), bits), np.uint8),
           "maccs": np.zeros((len(smiles), 167), np.uint8),
           "erg": np.zeros((len(smiles), 315), np.float32),
           "descriptors": np.zeros((len(smiles), len(names)), np.float64)}
    for row, text in enumerate(smiles):
        molecule = parent_molecule(text)
        out["morgan"][row] = generator.GetFingerprintAsNumPy(molecule)
        out["maccs"][row] = np.array(list(MACCSkeys.GenMACCSKeys(molecule)), dtype=np.uint8)
        out["erg"][row] = rdReducedGraphs.GetErGFingerprint(molecule)
        out["descriptors"][row] = list(properties.ComputeProperties(molecule))
    out["descriptor_names"] = np.array(names)
    return out


def sign_log(raw: np.ndarray) -> np.ndarray:
    finite = np.nan_to_num(raw, nan=0.0, posinf=1e30, neginf=-1e30)
    return np.where(np.isnan(raw), np.nan, np.sign(finite) * np.log1p(np.abs(finite)))


def fit_descriptor_scaling(raw: np.ndarray, reference: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Median and interquartile range of the sign-log values over the reference rows."""
    logged = sign_log(raw[reference])
    q75, q25 = np.nanpercentile(logged, [75, 25], axis=0)
    return np.nanmedian(logged, axis=0), np.where(q75 - q25 > 1e-6, q75 - q25, 1.0)


def scale_descriptors(raw: np.ndarray, median: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """sign-log, centred and scaled, clipped, NaN as 0."""
    scaled = np.clip((sign_log(raw) - median) / spread, -DESCRIPTOR_CLIP, DESCRIPTOR_CLIP)
    return np.nan_to_num(scaled, nan=0.0).astype(np.float32)


def atc_prefixes(codes: list[str]) -> set[str]:
    """ATC classes of levels 1-4 of level-5 codes (1, 3, 4 and 5 characters)."""
    return {code[:n] for code in codes for n in (1, 3, 4, 5)}


def atc_classes(codes: list[list[str]], min_drugs: int) -> list[str]:
    counts: dict[str, int] = {}
    for drug in codes:
        for prefix in atc_prefixes(drug):
            counts[prefix] = counts.get(prefix, 0) + 1
    return sorted(c for c, n in counts.items() if n >= min_drugs)


def atc_block(codes: list[list[str]], classes: list[str]) -> np.ndarray:
    column = {c: i for i, c in enumerate(classes)}
    table = np.zeros((len(codes), len(classes)), np.float32)
    for row, drug in enumerate(codes):
        table[row, [column[c] for c in atc_prefixes(drug) if c in column]] = 1.0
    return table


def fit_spec(raw: dict[str, np.ndarray], atc_codes: list[list[str]], reference: np.ndarray,
             cfg: dict) -> FeatureSpec:
    median, spread = fit_descriptor_scaling(raw["descriptors"], reference)
    return FeatureSpec(cfg["morgan_bits"], [str(n) for n in raw["descriptor_names"]],
                       median.tolist(), spread.tolist(),
                       atc_classes(atc_codes, cfg["atc_min_drugs"]) if cfg["atc"] else [])


def apply_spec(raw: dict[str, np.ndarray], atc_codes: list[list[str]], spec: FeatureSpec
               ) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    blocks = {"morgan": raw["morgan"].astype(np.float32), "maccs": raw["maccs"].astype(np.float32),
              "erg": np.log1p(np.maximum(raw["erg"], 0)),
              "descriptors": scale_descriptors(raw["descriptors"],
                                               np.array(spec.descriptor_median),
                                               np.array(spec.descriptor_spread))}
    if spec.atc_classes:
        blocks["atc"] = atc_block(atc_codes, spec.atc_classes)
    columns, start = {}, 0
    for name, block in blocks.items():
        columns[name] = (start, start + block.shape[1])
        start += block.shape[1]
    return np.concatenate(list(blocks.values()), axis=1), columns


def drug_features(smiles: list[str], atc_codes: list[list[str]], reference: np.ndarray,
                  cfg: dict) -> DrugFeatures:
    """The feature table of every drug; scaling and ATC classes fitted on the `reference`
    rows (descriptors) and all drugs (which ATC classes are frequent enough)."""
    raw = structure_blocks(smiles, cfg["morgan_bits"])
    spec = fit_spec(raw, atc_codes, reference, cfg)
    values, blocks = apply_spec(raw, atc_codes, spec)
    return DrugFeatures(values, blocks, spec, raw["morgan"])


def features_for(smiles: list[str], atc_codes: list[list[str]], spec: FeatureSpec) -> np.ndarray:
    """Features of new or re-checked drugs under a stored spec (the encoder's input)."""
    return apply_spec(structure_blocks(smiles, spec.morgan_bits), atc_codes, spec)[0]


def tanimoto(bits: np.ndarray, reference_bits: np.ndarray) -> np.ndarray:
    """(drugs, references) Tanimoto similarity of binary fingerprints."""
    a, b = bits.astype(np.float32), reference_bits.astype(np.float32)
    shared = a @ b.T
    union = a.sum(1, keepdims=True) + b.sum(1)[None, :] - shared
    return np.where(union > 0, shared / np.maximum(union, 1), 0.0).astype(np.float32)


@dataclass
class Neighbours:
    """Top-`k` reference drugs of every drug: indices into `references` and similarities."""

    references: np.ndarray  # universe rows of the reference drugs
    seen: np.ndarray  # (drugs, k) reference indices; a reference drug's own list starts with it
    seen_similarity: np.ndarray
    unseen: np.ndarray  # (drugs, k) the same without the drug itself
    unseen_similarity: np.ndarray

    @property
    def nearest_similarity(self) -> np.ndarray:
        """Per drug, the similarity of the closest reference drug other than itself."""
        return self.unseen_similarity[:, 0]

    def sha256(self) -> str:
        return hashlib.sha256(self.references.tobytes() + self.seen.tobytes()).hexdigest()


def neighbours(morgan: np.ndarray, references: np.ndarray, k: int) -> Neighbours:
    similarity = tanimoto(morgan, morgan[references])
    is_self = np.zeros_like(similarity, dtype=bool)
    is_self[references, np.arange(len(references))] = True
    others = np.where(is_self, -1.0, similarity)
    order = np.argsort(-others, axis=1, kind="stable")[:, :k]
    unseen_similarity = np.take_along_axis(others, order, axis=1)
    seen, seen_similarity = order.copy(), unseen_similarity.copy()
    self_index = np.full(len(morgan), -1)
    self_index[references] = np.arange(len(references))
    own = self_index >= 0
    seen[own] = np.concatenate([self_index[own, None], order[own, :-1]], axis=1)
    seen_similarity[own] = np.concatenate([np.ones((own.sum(), 1), np.float32),
                                           unseen_similarity[own, :-1]], axis=1)
    return Neighbours(references, seen, seen_similarity.astype(np.float32), order,
                      unseen_similarity.astype(np.float32))


def save_features(path: Path, features: DrugFeatures, key: str) -> None:
    np.savez_compressed(path, key=np.array(key), values=features.values.astype(np.float32),
                        block_names=np.array(list(features.blocks)),
                        block_columns=np.array(list(features.blocks.values())),
                        spec=np.array(json.dumps(features.spec.to_json())),
                        morgan=features.morgan)


def load_features(path: Path, key: str) -> DrugFeatures | None:
    """The cached table at `path` if it was computed for `key` (drugs and settings)."""
    if not path.is_file():
        return None
    with np.load(path) as stored:
        if str(stored["key"]) != key:
            return None
        blocks = {str(n): (int(a), int(b)) for n, (a, b) in
                  zip(stored["block_names"], stored["block_columns"])}
        return DrugFeatures(stored["values"], blocks,
                            FeatureSpec(**json.loads(str(stored["spec"]))), stored["morgan"])


def cache_key(smiles: list[str], atc_codes: list[list[str]], cfg: dict) -> str:
    """Changes with the drugs, their ATC codes, the settings and this module's code."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(json.dumps([smiles, atc_codes, cfg], sort_keys=True).encode())
    return digest.hexdigest()
