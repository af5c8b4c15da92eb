"""The promotion gate: may a candidate chest-radiograph bundle replace the production one?

Both bundles are run (their ONNX files, as served) on the same cases:

- the site's held-out patients (`site_data`: never trained on, whichever export is given), each
  image at the operating point of its patient's population (age band; unknown: adult);
- each public test split: the official Kermany test split (children) and the adult NIH test
  patients, at that population's operating point.

Production is scored as it is served (its site calibration overlay when one is in force for
it); the candidate at its bundle's points, which is what it would be served with (an overlay is
bound to the model it was fitted for). The rule, one-sided at 95 %:

- better on the site: DeLong p < ALPHA for "the candidate's AUC is not higher";
- not worse beyond MARGINS anywhere (site and each public split): the one-sided 95 % lower
  bound of candidate - production must lie above -margin, for the AUC (DeLong) and for the
  sensitivity and specificity at each model's own threshold (paired patient bootstrap).

Without site data the candidate cannot be shown better, so the gate fails. The report is typed
(`GateReport`) and written as `gate.json` beside the candidate.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from clinassist.bundle import Bundle
from clinassist.errors import ClinassistError
from clinassist.serving.imaging.operating_points import OperatingPoints
from clinassist.training import cxr_populations, site_data
from clinassist.training.paired_tests import PairedDifference, delong, paired_bootstrap

ALPHA = 0.05
MARGINS = {"auc": 0.02, "sensitivity": 0.03, "specificity": 0.05}
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
GATE_FILE = "gate.json"
SITE = "site"


class GateError(ClinassistError):
    """The gate cannot compare the two models (the message says what is missing)."""


@dataclass(frozen=True)
class Cases:
    """One comparison's images (each as the model is given it) with labels, patients and the
    population whose operating point applies to each (None: the patient's age picks it)."""

    name: str
    description: str
    images: list[np.ndarray]
    targets: np.ndarray
    patients: np.ndarray
    ages: list[float | None] | None = None
    population: str | None = None


@dataclass(frozen=True)
class Comparison:
    name: str
    description: str
    images: int
    positives: int
    patients: int
    auc: PairedDifference
    sensitivity: PairedDifference
    specificity: PairedDifference

    def worse_beyond_margin(self) -> list[str]:
        return [f"{self.name}: the candidate's {metric} may be lower by more than {margin} "
                f"({d.candidate:.3f} vs {d.production:.3f}; one-sided 95% lower bound of the "
                f"difference {d.lower_95:+.3f})"
                for metric, margin in MARGINS.items()
                if (d := getattr(self, metric)).lower_95 <= -margin]

    def as_json(self) -> dict:
        return {"name": self.name, "description": self.description, "images": self.images,
                "positives": self.positives, "patients": self.patients,
                **{metric: getattr(self, metric).as_json() for metric in MARGINS}}


@dataclass(frozen=True)
class ModelUnderTest:
    name: str
    version: str
    sha256: str
    operating_points: str  # "bundle" or "site calibration vN"

    @classmethod
    def of(cls, bundle: Bundle, overlay: dict | None = None) -> "ModelUnderTest":
        source = f"site calibration v{overlay['version']}" if overlay else "bundle"
        return cls(bundle.name, bundle.version, bundle.metadata["sha256"], source)


@dataclass(frozen=True)
class GateReport:
    candidate: ModelUnderTest
    production: ModelUnderTest
    comparisons: list[Comparison]
    reasons: list[str]  # why it failed; empty when it passed
    public_limit: int | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        return not self.reasons

    def as_json(self) -> dict:
        return {
            "passed": self.passed, "reasons": self.reasons, "created": self.created,
            "candidate": vars(self.candidate), "production": vars(self.production),
            "rule": {"better_on_site": f"DeLong one-sided p < {ALPHA} for a higher AUC on the "
                                       "site's held-out patients",
                     "not_worse": {metric: f"one-sided 95% lower bound of candidate - "
                                           f"production > -{margin}"
                                   for metric, margin in MARGINS.items()},
                     "where": "site held-out patients and each public test split"},
            "public_images_per_population": self.public_limit or "all",
            "comparisons": [c.as_json() for c in self.comparisons],
        }

    def write(self, folder: Path) -> Path:
        path = folder / GATE_FILE
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
        return path


def logits(bundle: Bundle, images: list[np.ndarray]) -> np.ndarray:
    """The graph's logit of each image; images of one shape share batches."""
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        by_shape[image.shape].append(index)
    out = np.empty(len(images), dtype=np.float64)
    for indices in by_shape.values():
        batch = np.stack([images[i] for i in indices])[:, None].astype(np.float32)
        out[indices] = bundle.run_batched("image", batch)["logit"]
    return out


def flags(bundle: Bundle, points: OperatingPoints, cases: Cases) -> tuple[np.ndarray, np.ndarray]:
    """Each case's calibrated probability and whether it is flagged, at its point."""
    chosen = ([points.points[cases.population]] * len(cases.targets) if cases.population
              else [points.for_age(age) for age in cases.ages or []])
    probabilities = np.array([point.probability(float(logit))
                              for point, logit in zip(chosen, logits(bundle, cases.images))])
    return probabilities, probabilities >= np.array([point.threshold for point in chosen])


def compare(cases: Cases, candidate: tuple[Bundle, OperatingPoints],
            production: tuple[Bundle, OperatingPoints]) -> Comparison:
    if min(np.sum(cases.targets == 1), np.sum(cases.targets == 0)) < 2:
        raise GateError(f"{cases.name}: {len(cases.targets)} images with "
                        f"{int(cases.targets.sum())} pneumonia; the gate needs at least two of "
                        "each class (export more readings)")
    p_c, f_c = flags(*candidate, cases)
    p_p, f_p = flags(*production, cases)
    rates = paired_bootstrap(cases.targets, f_c, f_p, cases.patients, BOOTSTRAP_RESAMPLES,
                             BOOTSTRAP_SEED)
    return Comparison(cases.name, cases.description, len(cases.targets),
                      int(cases.targets.sum()), len(np.unique(cases.patients)),
                      delong(cases.targets, p_c, p_p), rates["sensitivity"], rates["specificity"])


def decide(comparisons: list[Comparison]) -> list[str]:
    """The reasons the candidate may not replace production (none: it may)."""
    reasons = []
    site = next((c for c in comparisons if c.name == SITE), None)
    if site is None:
        reasons.append("no site data: the candidate cannot be shown better on the site's own "
                       "patients (give --site DIR, a `dataset export` of this site)")
    elif site.auc.p_candidate_better >= ALPHA:
        reasons.append(f"site: the candidate is not shown better (AUC {site.auc.candidate:.3f} "
                       f"vs {site.auc.production:.3f}, DeLong one-sided p = "
                       f"{site.auc.p_candidate_better:.3f}, needs < {ALPHA})")
    for comparison in comparisons:
        reasons += comparison.worse_beyond_margin()
    return reasons


def site_cases(folders: list[Path]) -> Cases:
    """The held-out patients of every site dataset, each image once (exports may overlap)."""
    seen, records, datasets = set(), [], []
    for folder in folders:
        split = site_data.split_by_patient(site_data.read_site_dataset(folder))
        for record in split.held_out:
            if (record.patient_id, record.md5) not in seen:
                seen.add((record.patient_id, record.md5))
                records.append(record)
                datasets.append(split.dataset)
    images = [dataset.display_ready([record])[0] for dataset, record in zip(datasets, records)]
    return Cases(SITE, f"held-out patients of {len(folders)} site dataset(s) "
                       f"({site_data.HELD_OUT_FRACTION:.0%} of patients by the fixed split)",
                 images, np.array([r.label for r in records], dtype=np.int64),
                 np.array([r.patient_id for r in records]), ages=[r.age_years for r in records])


def stratified_subset(images: cxr_populations.LabelledImages, limit: int | None,
                      seed: int = 0) -> np.ndarray:
    """Indices of at most `limit` images keeping the class shares (all when no limit)."""
    everything = np.arange(len(images))
    if limit is None or limit >= len(images):
        return everything
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(images.targets == c),
                         max(2, round(limit * np.mean(images.targets == c))), replace=False)
              for c in (0, 1)]
    return np.sort(np.concatenate(chosen))


def public_cases(limit: int | None) -> list[Cases]:
    cases = []
    for population, images in cxr_populations.test_sets().items():
        keep = stratified_subset(images, limit)
        described = f"{images.part} ({cxr_populations.DESCRIPTIONS[population]})"
        cases.append(Cases(population, described,
                           [images.pixels[i].astype(np.float32) for i in keep],
                           images.targets[keep], images.patients[keep], population=population))
    return cases


def check_site_split(bundle: Bundle) -> None:
    """A model fine-tuned on site data under another held-out rule may have trained on the
    patients the gate holds out: refuse to judge it on them."""
    for cfg in bundle.metadata.get("training_configs", []):
        for recorded in cfg.get("site_data", []):
            if (recorded.get("split_seed"), recorded.get("held_out_fraction")) != (
                    site_data.SPLIT_SEED, site_data.HELD_OUT_FRACTION):
                raise GateError(f"{bundle.name} {bundle.version} was fine-tuned on site data "
                                "split by another rule, so the site's held-out patients may be "
                                "in its training data; retrain it with this version")


def run_gate(candidate: Bundle, production: Bundle, production_overlay: dict | None,
             sites: list[Path], public_limit: int | None = None) -> GateReport:
    for bundle in (candidate, production):
        check_site_split(bundle)
    scored_candidate = (candidate, OperatingPoints.from_metadata(candidate.metadata))
    scored_production = (production, OperatingPoints.from_metadata(production.metadata,
                                                                  production_overlay))
    cases = ([site_cases(sites)] if sites else []) + public_cases(public_limit)
    comparisons = [compare(c, scored_candidate, scored_production) for c in cases]
    return GateReport(ModelUnderTest.of(candidate), ModelUnderTest.of(production,
                                                                      production_overlay),
                      comparisons, decide(comparisons), public_limit)


def format_report(report: GateReport) -> str:
    lines = [f"gate {'PASSED' if report.passed else 'FAILED'}: candidate "
             f"{report.candidate.name} {report.candidate.version} vs production "
             f"{report.production.version} ({report.production.operating_points} points)"]
    for c in report.comparisons:
        lines.append(f"{c.name}: {c.images} images of {c.patients} patients "
                     f"({c.positives} pneumonia)")
        for metric in MARGINS:
            d = getattr(c, metric)
            lines.append(f"  {metric:<12} {d.candidate:.3f} vs {d.production:.3f}  difference "
                         f"{d.difference:+.3f}, one-sided 95% lower bound {d.lower_95:+.3f}"
                         + (f", p(better) {d.p_candidate_better:.3f}" if metric == "auc" else ""))
    lines += [f"- {reason}" for reason in report.reasons]
    return "\n".join(lines)
