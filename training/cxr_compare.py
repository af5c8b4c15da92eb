"""Rank the candidate cxr bundles, each run alone and every ensemble of runs, on validation.

The rule that picks the bundle to ship: the lowest validation NLL after temperature scaling,
averaged over the populations (each population's NLL under its own temperature, as the
bundle calibrates them), among the candidates whose float16 weights fit the bundle size limit.
The test splits play no part in it.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from clinassist.training import calibration
from clinassist.training.cxr_export import load_ensemble, logits_of
from clinassist.training.cxr_populations import validation_sets
from clinassist.training.metrics import confusion

BUNDLE_LIMIT_MB = 20.0
BYTES_PER_WEIGHT = 2  # float16 storage, see onnx_export.store_weights_as_half


def population_score(logits: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """NLL after temperature scaling and the errors at 0.5 of one population's validation set."""
    temperature = calibration.fit_temperature(logits, targets)
    counts = confusion(calibration.sigmoid(logits / temperature), targets, 0.5)
    return calibration.binary_nll(logits / temperature, targets), counts["fp"] + counts["fn"]


def rank_candidates(member_logits: dict[str, list[np.ndarray]], targets: dict[str, np.ndarray],
                    names: list[str], weights_mb: list[float],
                    limit_mb: float = BUNDLE_LIMIT_MB) -> list[dict]:
    """Every non-empty subset of members, best mean validation NLL first; the one to ship is
    marked. `member_logits[population][i]` are member i's logits on that population's
    validation set. An ensemble's logit is the mean of its members', as in `CxrEnsemble`."""
    rows = []
    for count in range(1, len(names) + 1):
        for chosen in combinations(range(len(names)), count):
            scores = {population: population_score(
                np.mean([logits[i] for i in chosen], axis=0), targets[population])
                for population, logits in member_logits.items()}
            rows.append({
                "runs": [names[i] for i in chosen],
                "nll_after_temperature": float(np.mean([nll for nll, _ in scores.values()])),
                "nll_by_population": {p: nll for p, (nll, _) in scores.items()},
                "errors_at_0.5": {p: errors for p, (_, errors) in scores.items()},
                "weights_mb": sum(weights_mb[i] for i in chosen),
                "chosen": False,
            })
    rows.sort(key=lambda row: row["nll_after_temperature"])
    fitting = [row for row in rows if row["weights_mb"] <= limit_mb]
    if fitting:
        fitting[0]["chosen"] = True
    return rows


def compare(runs: list[Path]) -> list[dict]:
    """Rank every ensemble of the trained runs (which must share one validation split)."""
    ensemble, cfgs = load_ensemble(runs)
    sets = validation_sets(cfgs[0])
    member_logits = {population: [logits_of(member, images.pixels)
                                  for member in ensemble.members]
                     for population, images in sets.items()}
    weights_mb = [BYTES_PER_WEIGHT * sum(p.numel() for p in member.parameters()) / 1e6
                  for member in ensemble.members]
    return rank_candidates(member_logits, {p: s.targets for p, s in sets.items()},
                           [str(run) for run in runs], weights_mb)


def format_table(rows: list[dict]) -> str:
    populations = list(rows[0]["nll_by_population"]) if rows else []
    lines = [f"{'NLL':>7} " + " ".join(f"{p[:10]:>10}" for p in populations)
             + f" {'errors':>9} {'MB':>5}  runs (* = ship: lowest mean NLL within "
             f"{BUNDLE_LIMIT_MB:.0f} MB)"]
    for row in rows:
        mark = "*" if row["chosen"] else " "
        errors = "/".join(str(row["errors_at_0.5"][p]) for p in populations)
        lines.append(f"{row['nll_after_temperature']:7.4f} "
                     + " ".join(f"{row['nll_by_population'][p]:10.4f}" for p in populations)
                     + f" {errors:>9} {row['weights_mb']:5.1f} {mark}{' + '.join(row['runs'])}")
    return "\n".join(lines)
