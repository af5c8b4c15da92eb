"""Rank the candidate cxr bundles, each run alone and every ensemble of runs, on validation.

The rule that picks the bundle to ship: the lowest validation NLL after temperature scaling
among the candidates whose float16 weights fit the bundle size limit. The test split plays no
part in it.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from clinassist.training import calibration
from clinassist.training.cxr_export import load_ensemble, logits_of, validation_data
from clinassist.training.metrics import confusion

BUNDLE_LIMIT_MB = 20.0
BYTES_PER_WEIGHT = 2  # float16 storage, see onnx_export.store_weights_as_half


def rank_candidates(member_logits: list[np.ndarray], targets: np.ndarray, names: list[str],
                    weights_mb: list[float], limit_mb: float = BUNDLE_LIMIT_MB) -> list[dict]:
    """Every non-empty subset of members, best validation NLL first; the one to ship is marked.

    An ensemble's logit is the mean of its members' logits, as in `CxrEnsemble`."""
    rows = []
    for count in range(1, len(names) + 1):
        for chosen in combinations(range(len(names)), count):
            logits = np.mean([member_logits[i] for i in chosen], axis=0)
            temperature = calibration.fit_temperature(logits, targets)
            counts = confusion(calibration.sigmoid(logits / temperature), targets, 0.5)
            rows.append({
                "runs": [names[i] for i in chosen],
                "nll_after_temperature": calibration.binary_nll(logits / temperature, targets),
                "errors_at_0.5": counts["fp"] + counts["fn"],
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
    pixels, targets = validation_data(cfgs[0])
    member_logits = [logits_of(member, pixels) for member in ensemble.members]
    weights_mb = [BYTES_PER_WEIGHT * sum(p.numel() for p in member.parameters()) / 1e6
                  for member in ensemble.members]
    return rank_candidates(member_logits, targets, [str(run) for run in runs], weights_mb)


def format_table(rows: list[dict]) -> str:
    lines = [f"{'NLL':>7} {'errors':>6} {'MB':>5}  runs (* = ship: lowest NLL within "
             f"{BUNDLE_LIMIT_MB:.0f} MB)"]
    for row in rows:
        mark = "*" if row["chosen"] else " "
        lines.append(f"{row['nll_after_temperature']:7.4f} {row['errors_at_0.5']:6d} "
                     f"{row['weights_mb']:5.1f} {mark}{' + '.join(row['runs'])}")
    return "\n".join(lines)
