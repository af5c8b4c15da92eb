"""Rank the candidate cxr bundles, each run alone and every ensemble of runs, on validation.

The rule that picks the bundle to ship, among the candidates whose float16 weights fit the
bundle size limit and whose paediatric validation accuracy at 0.5 meets the paediatric goal
(0.92), or among all that fit if none meets it: the highest worst-group validation AUC (the lowest of the paediatric AUC and the adult
AUCs within AP and within PA, the rule training selects checkpoints by: a model is as good as
its worst population), then the lowest validation NLL after temperature scaling averaged over
the populations (each under its own temperature, as the bundle calibrates them). The NLL alone
favours the paediatric set, where most validation images are. The test splits play no part.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from clinassist.training import calibration
from clinassist.training.cxr_export import load_ensemble, logits_of
from clinassist.training.cxr_populations import LabelledImages, validation_sets
from clinassist.training.cxr_train import ValidationGroups, validation_aucs
from clinassist.training.metrics import confusion

BUNDLE_LIMIT_MB = 20.0
BYTES_PER_WEIGHT = 2  # float16 storage, see onnx_export.store_weights_as_half
PAEDIATRIC_ACCURACY_GOAL = 0.92  # at 0.5, on validation (the goal's figure on the test split)


def population_score(logits: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """NLL after temperature scaling and the errors at 0.5 of one population's validation set."""
    temperature = calibration.fit_temperature(logits, targets)
    counts = confusion(calibration.sigmoid(logits / temperature), targets, 0.5)
    return calibration.binary_nll(logits / temperature, targets), counts["fp"] + counts["fn"]


def groups_of(sets: dict[str, LabelledImages]) -> ValidationGroups:
    """The population and view of each image, in the order of the concatenated populations."""
    return ValidationGroups(
        np.concatenate([np.full(len(s), p) for p, s in sets.items()]),
        np.concatenate([s.views if s.views is not None else np.full(len(s), "")
                        for s in sets.values()]))


def meets_paediatric_goal(errors: dict[str, int], targets: dict[str, np.ndarray]) -> bool:
    if "paediatric" not in targets:
        return True
    return 1 - errors["paediatric"] / len(targets["paediatric"]) >= PAEDIATRIC_ACCURACY_GOAL


def rank_candidates(member_logits: dict[str, list[np.ndarray]], targets: dict[str, np.ndarray],
                    names: list[str], weights_mb: list[float], groups: ValidationGroups,
                    limit_mb: float = BUNDLE_LIMIT_MB) -> list[dict]:
    """Every non-empty subset of members, in the order of the rule above; the one to ship is
    marked. `member_logits[population][i]` are member i's logits on that population's
    validation set, `groups` the population and view of each image of the populations
    concatenated. An ensemble's logit is the mean of its members', as in `CxrEnsemble`."""
    all_targets = np.concatenate(list(targets.values()))
    rows = []
    for count in range(1, len(names) + 1):
        for chosen in combinations(range(len(names)), count):
            logits = {population: np.mean([each[i] for i in chosen], axis=0)
                      for population, each in member_logits.items()}
            scores = {population: population_score(logits[population], targets[population])
                      for population in logits}
            aucs = validation_aucs(np.concatenate(list(logits.values())), all_targets, groups)
            errors = {p: errors for p, (_, errors) in scores.items()}
            rows.append({
                "runs": [names[i] for i in chosen],
                "worst_auc": aucs.pop("worst_auc"),
                "auc": {name.removeprefix("auc_"): value for name, value in aucs.items()},
                "nll_after_temperature": float(np.mean([nll for nll, _ in scores.values()])),
                "nll_by_population": {p: nll for p, (nll, _) in scores.items()},
                "errors_at_0.5": errors,
                "eligible": meets_paediatric_goal(errors, targets),
                "weights_mb": sum(weights_mb[i] for i in chosen),
                "chosen": False,
            })
    rows.sort(key=lambda row: (-row["worst_auc"], row["nll_after_temperature"]))
    fitting = [row for row in rows if row["weights_mb"] <= limit_mb]
    shippable = [row for row in fitting if row["eligible"]] or fitting  # none meets the goal
    if shippable:
        shippable[0]["chosen"] = True
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
                           [str(run) for run in runs], weights_mb, groups_of(sets))


def format_table(rows: list[dict]) -> str:
    populations = list(rows[0]["nll_by_population"]) if rows else []
    groups = list(rows[0]["auc"]) if rows else []
    lines = [f"{'worst':>6} " + " ".join(f"{g[:10]:>10}" for g in groups)
             + f" {'NLL':>7} " + " ".join(f"{p[:10]:>10}" for p in populations)
             + f" {'errors':>9} {'MB':>5}  runs (* = ship, see the rule; - = paediatric "
             f"accuracy at 0.5 under {PAEDIATRIC_ACCURACY_GOAL})"]
    for row in rows:
        mark = "*" if row["chosen"] else " " if row["eligible"] else "-"
        errors = "/".join(str(row["errors_at_0.5"][p]) for p in populations)
        lines.append(f"{row['worst_auc']:6.4f} "
                     + " ".join(f"{row['auc'].get(g, float('nan')):10.4f}" for g in groups)
                     + f" {row['nll_after_temperature']:7.4f} "
                     + " ".join(f"{row['nll_by_population'][p]:10.4f}" for p in populations)
                     + f" {errors:>9} {row['weights_mb']:5.1f} {mark}{' + '.join(row['runs'])}")
    return "\n".join(lines)
