"""Every drug the interaction model can name, and which pairs each knowledge source lists.

The drug universe is DrugBank-86's 1,704 drugs (keyed by DrugBank ID, their benchmark SMILES)
plus every `vocab_drug_names` drug with a SMILES that is not one of them (keyed
`vocab:<canonical name>`), deduplicated by structure (the InChIKey connectivity block of the
parent molecule), so that a salt form listed as its own canonical drug joins its parent. Each
drug carries the lower-case names and brands that reach it.

Listed pairs come from three sources, joined onto the universe by name:
- DrugBank-86 (by ID), unordered here: existence does not depend on the order;
- DDInter 1.0, rows with a known level (an `Unknown` level only excludes a negative);
- the ANSM thesaurus with its class rules expanded through the substance index, read from a
  knowledge base built by `serving.medication.kb_build` (the same expansion the service uses).

Two joins are kept. `strict` maps a source's name only when it names exactly one drug; these
pairs are positives and degrees. `generous` also tries the name without a parenthesised
qualifier ("Triamcinolone (ophthalmic)") and every name the knowledge base knows for an ANSM
ingredient: a pair listed under any such reading is never used as a negative.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import pickle
import re
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clinassist import config
from clinassist.bundle import file_sha256
from clinassist.serving.durable import write_synced
from clinassist.serving.medication import kb_build
from clinassist.serving.medication.severity import DDINTER_LEVELS
from clinassist.serving.medication.sources import ANSM, ATC, DDINTER, DRUG_NAMES
from clinassist.serving.medication.text import fold, strip_salt
from clinassist.training import ddi_data

VOCAB_PREFIX = "vocab:"
QUALIFIER = re.compile(r"\s*\([^)]*\)")


@dataclass(frozen=True)
class Drug:
    key: str  # DrugBank ID (DrugBank-86 drugs) or "vocab:<canonical name>"
    name: str  # display name: the vocabulary's canonical name, else the key
    smiles: str
    in_drugbank86: bool


@dataclass
class DrugUniverse:
    drugs: list[Drug]
    names: dict[str, int]  # folded name -> drug row, only names that reach one drug

    def __post_init__(self) -> None:
        self.row = {drug.key: i for i, drug in enumerate(self.drugs)}

    def __len__(self) -> int:
        return len(self.drugs)

    @property
    def drugbank86(self) -> np.ndarray:
        return np.array([d.in_drugbank86 for d in self.drugs])

    def find(self, name: str) -> int | None:
        """The drug an exact folded name (or the name without salt words) reaches."""
        folded = fold(name)
        found = self.names.get(folded)
        return found if found is not None else self.names.get(strip_salt(folded))

    def find_generous(self, name: str) -> set[int]:
        """Every drug some reading of the name reaches (for excluding negatives)."""
        readings = {name, QUALIFIER.sub("", name)}
        return {row for reading in readings if (row := self.find(reading)) is not None}

    def names_of(self) -> dict[int, list[str]]:
        by_row: dict[int, list[str]] = {}
        for name, row in sorted(self.names.items()):
            by_row.setdefault(row, []).append(name)
        return by_row

    def sha256(self) -> str:
        text = "\n".join(f"{d.key},{d.smiles}" for d in self.drugs)
        return hashlib.sha256(text.encode()).hexdigest()


def parent_key(smiles: str) -> str | None:
    """The InChIKey connectivity block of the largest fragment (None when RDKit cannot parse)."""
    from rdkit import Chem
    from rdkit.Chem.MolStandardize import rdMolStandardize

    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        return None
    parent = rdMolStandardize.LargestFragmentChooser().choose(molecule)
    key = Chem.MolToInchiKey(parent)
    return key.split("-")[0] if key else None


def read_universe(data_dir: Path, benchmark: ddi_data.DrugBank86) -> DrugUniverse:
    """DrugBank-86's drugs first (in their benchmark order), then the vocabulary's others."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    canonical_path, synonyms_path = DRUG_NAMES.paths(data_dir)
    canonicals = kb_build.read_csv(canonical_path)
    synonyms: dict[str, list[str]] = {}
    for row in kb_build.read_csv(synonyms_path):
        synonyms.setdefault(row["canonical"], []).append(row["variant"])
    by_id = {row["drugbank_id"]: row for row in canonicals if row["drugbank_id"]}
    drugs = [Drug(key, by_id[key]["canonical"] if key in by_id else key, smiles, True)
             for key, smiles in zip(benchmark.drugs, benchmark.smiles)]
    claims: dict[str, set[int]] = {}

    def claim(row: int, canonical: str) -> None:
        for name in [canonical, *synonyms.get(canonical, [])]:
            claims.setdefault(fold(name), set()).add(row)

    for row, drug in enumerate(drugs):
        if drug.key in by_id:
            claim(row, by_id[drug.key]["canonical"])
    benchmark_ids = set(benchmark.drugs)
    parents = {}
    for row, drug in enumerate(drugs):
        parents.setdefault(parent_key(drug.smiles), row)
    for entry in canonicals:
        if not entry["smiles"] or entry["drugbank_id"] in benchmark_ids:
            continue
        parent = parent_key(entry["smiles"])
        if parent is None:
            continue
        if parent in parents:  # a salt form or duplicate of a drug already in
            claim(parents[parent], entry["canonical"])
            continue
        parents[parent] = len(drugs)
        drugs.append(Drug(VOCAB_PREFIX + entry["canonical"], entry["canonical"], entry["smiles"],
                          False))
        claim(len(drugs) - 1, entry["canonical"])
    names = {name: rows.pop() for name, rows in claims.items() if len(rows) == 1}
    return DrugUniverse(drugs, names)


Pair = tuple[int, int]  # universe rows, smaller first


def unordered(a: int, b: int) -> Pair:
    return (a, b) if a < b else (b, a)


@dataclass
class ListedPairs:
    """Unordered listed pairs per source; `generous` is every source under every reading."""

    drugbank86: set[Pair]
    ddinter: set[Pair]
    ansm: set[Pair]
    generous: set[Pair]
    _degrees: dict[int, dict[str, np.ndarray]] = field(default_factory=dict, repr=False,
                                                       compare=False)

    @property
    def any_source(self) -> set[Pair]:
        return self.drugbank86 | self.ddinter | self.ansm

    def degrees(self, drugs: int) -> dict[str, np.ndarray]:
        """Distinct listed partners per drug: per source and over the union (counted once;
        read-only arrays)."""
        if drugs not in self._degrees:
            result = {}
            for name, pairs in (("drugbank86", self.drugbank86), ("ddinter", self.ddinter),
                                ("ansm", self.ansm), ("union", self.any_source)):
                counts = np.zeros(drugs, dtype=np.int64)
                if pairs:
                    np.add.at(counts, np.fromiter(itertools.chain.from_iterable(pairs),
                                                  dtype=np.int64), 1)
                counts.flags.writeable = False
                result[name] = counts
            self._degrees[drugs] = result
        return self._degrees[drugs]


def drugbank86_pairs(universe: DrugUniverse, pairs: ddi_data.Pairs) -> set[Pair]:
    rows = np.array([universe.row[drug] for drug in pairs.drugs])
    return {unordered(int(a), int(b)) for a, b in zip(rows[pairs.first], rows[pairs.second])}


def ddinter_pairs(universe: DrugUniverse, data_dir: Path) -> tuple[set[Pair], set[Pair]]:
    """(strict, generous) DDInter pairs. Strict pairs have a known level (Major, Moderate,
    Minor); an `Unknown` level (47,182 rows, e.g. amoxicillin + acetaminophen) is too unsure to
    be a positive, but it still keeps the pair out of the negatives."""
    strict, generous = set(), set()
    for path in DDINTER.paths(data_dir):
        for row in kb_build.read_csv(path):
            a, b = universe.find(row["Drug_A"]), universe.find(row["Drug_B"])
            if a is not None and b is not None and a != b:
                (strict if row["Level"] in DDINTER_LEVELS else generous).add(unordered(a, b))
            for x in universe.find_generous(row["Drug_A"]):
                for y in universe.find_generous(row["Drug_B"]):
                    if x != y:
                        generous.add(unordered(x, y))
    return strict, generous


def ansm_knowledge_base(data_dir: Path, folder: Path) -> Path:
    """The service's own KB build (ANSM, drug names, ATC): class rules already expanded."""
    path = folder / "kb_ansm.sqlite"
    kb_build.build(data_dir, path)
    return path


def ansm_pairs(universe: DrugUniverse, kb: Path) -> tuple[set[Pair], set[Pair]]:
    """(strict, generous) ANSM ingredient pairs of the knowledge base, mapped onto the universe."""
    db = sqlite3.connect(f"file:{kb}?mode=ro", uri=True)
    try:
        ingredient_name = dict(db.execute("SELECT id, name FROM ingredients"))
        all_names: dict[int, set[str]] = {}
        for name, ingredient in db.execute("SELECT name, ingredient FROM names"):
            all_names.setdefault(ingredient, set()).add(name)
        rows = db.execute("SELECT DISTINCT x.a, x.b FROM interactions x JOIN rules r "
                          "ON r.id = x.rule WHERE r.source = ?", (ANSM.id,)).fetchall()
    finally:
        db.close()
    strict_of = {i: universe.find(name) for i, name in ingredient_name.items()}
    generous_of = {i: {r for n in all_names.get(i, set()) | {name}
                       if (r := universe.find(n)) is not None}
                   for i, name in ingredient_name.items()}
    strict, generous = set(), set()
    for a, b in rows:
        x, y = strict_of[a], strict_of[b]
        if x is not None and y is not None and x != y:
            strict.add(unordered(x, y))
        for x in generous_of[a]:
            for y in generous_of[b]:
                if x != y:
                    generous.add(unordered(x, y))
    return strict, generous


def atc_codes(universe: DrugUniverse, kb: Path) -> list[list[str]]:
    """WHO ATC level-5 codes of each drug, through the knowledge base's name join."""
    db = sqlite3.connect(f"file:{kb}?mode=ro", uri=True)
    try:
        by_ingredient: dict[int, set[str]] = {}
        for code, ingredient in db.execute("SELECT code, ingredient FROM codes "
                                           "WHERE system = 'atc'"):
            by_ingredient.setdefault(ingredient, set()).add(code)
        names = db.execute("SELECT name, ingredient FROM names").fetchall()
    finally:
        db.close()
    codes: dict[int, set[str]] = {}
    for name, ingredient in names:
        row = universe.names.get(name)
        if row is not None and ingredient in by_ingredient:
            codes.setdefault(row, set()).update(by_ingredient[ingredient])
    return [sorted(codes.get(row, ())) for row in range(len(universe))]


@dataclass
class Sources:
    universe: DrugUniverse
    benchmark: ddi_data.DrugBank86
    listed: ListedPairs
    atc: list[list[str]]
    file_sha256: dict[str, str]


def load(data_dir: Path | None = None) -> Sources:
    """The universe, the benchmark, every source's listed pairs and the drugs' ATC codes
    (read once per process and folder, and kept in `CLINASSIST_HOME/cache` while the source
    files and the code that reads them are unchanged: reading takes half a minute of RDKit,
    CSV and a knowledge-base build)."""
    return _load(data_dir or config.data_dir())


CODE = (Path(__file__), Path(kb_build.__file__), Path(ddi_data.__file__))


def cache_path(data_dir: Path) -> Path:
    """The cache file for these sources: named by the hash of every input file and of the code."""
    digest = hashlib.sha256()
    benchmark = data_dir / ddi_data.DATASET_FOLDER
    inputs = [p for source in (ANSM, ATC, DDINTER, DRUG_NAMES) for p in source.paths(data_dir)]
    for path in [*inputs, *(benchmark / name for name in ddi_data.FILES), *CODE]:
        digest.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    return config.home_dir() / "cache" / f"ddi_sources-{digest.hexdigest()[:24]}.pickle"


@functools.lru_cache(maxsize=2)
def _load(data_dir: Path) -> Sources:
    path = cache_path(data_dir)
    if path.is_file():
        return pickle.loads(path.read_bytes())
    sources = read_sources(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_synced(path, pickle.dumps(sources, protocol=pickle.HIGHEST_PROTOCOL))
    return sources


def read_sources(data_dir: Path) -> Sources:
    benchmark = ddi_data.load(data_dir / ddi_data.DATASET_FOLDER)
    universe = read_universe(data_dir, benchmark)
    with tempfile.TemporaryDirectory() as folder:
        kb = ansm_knowledge_base(data_dir, Path(folder))
        ansm_strict, ansm_generous = ansm_pairs(universe, kb)
        atc = atc_codes(universe, kb)
    ddinter_strict, ddinter_generous = ddinter_pairs(universe, data_dir)
    db86 = drugbank86_pairs(universe, benchmark.pairs)
    listed = ListedPairs(db86, ddinter_strict, ansm_strict,
                         db86 | ddinter_generous | ansm_generous | ddinter_strict | ansm_strict)
    hashes = {f"{source.folder}/{path.name}": file_sha256(path)
              for source in (ANSM, DDINTER, DRUG_NAMES) for path in source.paths(data_dir)}
    hashes.update({f"{ddi_data.DATASET_FOLDER}/{name}": digest
                   for name, digest in benchmark.file_sha256.items()})
    return Sources(universe, benchmark, listed, atc, hashes)
