"""The manifest of the constructed interaction pairs (`datasets/ddi_negatives/`): counts and
SHA-256 of every part of every split and external group, so that a rebuild can be checked.

    python -m clinassist.training.ddi_manifest            # print it
    python -m clinassist.training.ddi_manifest --write    # write the dataset card's files
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from clinassist.config import REPO_ROOT
from clinassist.training import ddi_data, ddi_external
from clinassist.training.ddi_negatives import LabelledPairs
from clinassist.training.ddi_train import DEFAULT_CONFIG, Prepared, prepare, split_pairs
from clinassist.training.trainer import load_config

FOLDER = REPO_ROOT / "datasets" / "ddi_negatives"
PART_NAMES = {ddi_data.TRAIN: "train", ddi_data.VAL: "val", ddi_data.TEST: "test"}
SAMPLE_SIZE = 100


def summary(pairs: LabelledPairs) -> dict:
    positive = pairs.label == 1
    return {"positives": int(positive.sum()),
            "drugbank86_positives": int((positive & (pairs.classes >= 0)).sum()),
            "negatives": int((pairs.label == 0).sum()), "sha256": pairs.sha256()}


def manifest(prepared: Prepared, cfg: dict) -> dict:
    task = prepared.task
    splits = {name: split_pairs(prepared, cfg, name) for name in ddi_data.SPLITS}
    external = ddi_external.external_sets(prepared, splits["s1"].binary, cfg)
    return {
        "construction": cfg["negatives"], "seed": cfg["seed"],
        "sources_sha256": prepared.sources.file_sha256,
        "well_known_drugs": int(task.known.sum()),
        "candidate_negatives": task.candidates,
        "listed_pairs_of_well_known_drugs": {
            "drugbank86": int((task.positives.classes >= 0).sum()),
            "ddinter_or_ansm_only": int((task.positives.classes < 0).sum())},
        "matched": summary(task.pairs),
        "splits": {name: {PART_NAMES[p]: summary(pairs.binary[p]) for p in PART_NAMES}
                   for name, pairs in splits.items()},
        "external": {group: {PART_NAMES[p]: summary(parts[p]) for p in parts}
                     for group, parts in external.items()},
    }


def write_sample(prepared: Prepared, cfg: dict, path: Path) -> None:
    """A readable sample of S1 test negatives: names, keys and degrees."""
    test = split_pairs(prepared, cfg, "s1").binary[ddi_data.TEST]
    negatives = test.take(np.flatnonzero(test.label == 0))
    rows = np.random.default_rng(cfg["seed"]).choice(len(negatives), SAMPLE_SIZE, replace=False)
    drugs = prepared.sources.universe.drugs
    cells = prepared.task.cells
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["drug_a", "drugbank_id_a", "degree_a", "drug_b", "drugbank_id_b",
                      "degree_b"])
        for a, b in zip(negatives.first[np.sort(rows)], negatives.second[np.sort(rows)]):
            out.writerow([drugs[a].name, drugs[a].key, int(cells.union_degree[a]),
                          drugs[b].name, drugs[b].key, int(cells.union_degree[b])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--write", action="store_true", help=f"write into {FOLDER}")
    args = parser.parse_args()
    cfg = load_config(args.config)
    prepared = prepare(cfg, with_features=False)
    result = manifest(prepared, cfg)
    text = json.dumps(result, indent=2) + "\n"
    if args.write:
        (FOLDER / "manifest.json").write_text(text)
        write_sample(prepared, cfg, FOLDER / "sample_s1_test_negatives.csv")
    print(text)


if __name__ == "__main__":
    main()
