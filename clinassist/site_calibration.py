"""`clinassist calibrate site`: fit an imaging centre's own temperature and threshold.

The site's labelled studies (DICOM files or folders, and a CSV of SOP Instance UID and label)
are scored through the same pipeline the service uses (header and pixel QC, the model). For
each population with enough cases of both classes, the temperature and the threshold are fitted
with the same rules as the bundle's (`training.calibration`), and the site's metrics are
printed with 95 % bootstrap intervals before (the bundle's point) and after (the site's point,
estimated by cross-fitting: each case scored by a point fitted without it). The result is
stored as a new, audited site overlay version in CLINASSIST_HOME; the bundle is never changed.
"""

from __future__ import annotations

import asyncio
import csv
import getpass
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from clinassist.errors import ClinassistError
from clinassist.serving.dicom import DicomRejection
from clinassist.serving.imaging.operating_points import OperatingPoints
from clinassist.serving.imaging.site_calibration import ModelIdentity, SiteCalibrationStore
from clinassist.serving.imaging.triage import Models, Pipeline
from clinassist.serving.security import AuditTrail
from clinassist.serving.security.roles import Permission, Role
from clinassist.training import calibration
from clinassist.training.metrics import (auc, binary_metrics, expected_calibration_error,
                                         sensitivity, specificity, with_bootstrap)

MIN_CASES_PER_CLASS = 20
CROSS_FIT_FOLDS = 5
BOOTSTRAP_RESAMPLES = 1000
LABELS = {"pneumonia": 1, "1": 1, "normal": 0, "no_pneumonia": 0, "0": 0}


class SiteCalibrationError(ClinassistError):
    """The site's labels or images cannot give a calibration (the message says what is needed)."""


@dataclass(frozen=True)
class Case:
    sop_instance_uid: str
    label: int
    logit: float
    population: str


@dataclass(frozen=True)
class Collected:
    cases: list[Case]
    unreadable: list[str]  # file names
    failed_qc: int
    unlabelled: int
    labels_without_image: int


def read_labels(path: Path) -> dict[str, int]:
    """SOP Instance UID -> 1 (pneumonia) / 0 (normal), from a CSV with those two columns."""
    if not path.is_file():
        raise SiteCalibrationError(f"labels file {path} not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"sop_instance_uid", "label"} <= set(rows[0]):
        raise SiteCalibrationError(f"{path} needs the columns sop_instance_uid,label (label one "
                                   f"of {', '.join(sorted(LABELS))})")
    labels, bad = {}, []
    for number, row in enumerate(rows, start=2):
        label = LABELS.get(str(row["label"]).strip().lower())
        if label is None or not row["sop_instance_uid"]:
            bad.append(number)
        else:
            labels[row["sop_instance_uid"].strip()] = label
    if bad:
        raise SiteCalibrationError(f"{path}: lines {bad[:10]} lack a SOP Instance UID or have a "
                                   f"label other than {', '.join(sorted(LABELS))}")
    return labels


def dicom_files(inputs: list[Path]) -> list[Path]:
    files = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file())
        elif item.is_file():
            files.append(item)
        else:
            raise SiteCalibrationError(f"{item} is neither a file nor a folder")
    return files


def collect(pipeline: Pipeline, points: OperatingPoints, labels: dict[str, int],
            files: list[Path]) -> Collected:
    """Score every labelled file as the service would; count what cannot be used."""
    cases, unreadable, failed_qc, unlabelled, seen = [], [], 0, 0, set()
    for path in files:
        try:
            assessed = asyncio.run(pipeline.assess(path.read_bytes()))
        except DicomRejection:
            unreadable.append(path.name)
            continue
        uid = str(assessed.source.SOPInstanceUID)
        if uid not in labels or uid in seen:
            unlabelled += uid not in labels
            continue
        seen.add(uid)
        if not assessed.passed_qc:
            failed_qc += 1
            continue
        cases.append(Case(uid, labels[uid], assessed.logit,
                          points.population_of(assessed.age_years)))
    return Collected(cases, unreadable, failed_qc, unlabelled, len(set(labels) - seen))


def cross_fitted_probabilities(logits: np.ndarray, targets: np.ndarray,
                               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each case's probability and threshold from a point fitted on the other folds."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(targets), dtype=int)
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(targets == label))
        folds[members] = np.arange(len(members)) % CROSS_FIT_FOLDS
    probabilities, thresholds = np.empty(len(targets)), np.empty(len(targets))
    for fold in range(CROSS_FIT_FOLDS):
        held, fit = folds == fold, folds != fold
        temperature = calibration.fit_temperature(logits[fit], targets[fit])
        threshold, _ = calibration.choose_threshold(
            calibration.sigmoid(logits[fit] / temperature), targets[fit])
        probabilities[held] = calibration.sigmoid(logits[held] / temperature)
        thresholds[held] = threshold
    return probabilities, thresholds


def site_metrics(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> dict:
    return with_bootstrap(binary_metrics(threshold), probabilities, targets, BOOTSTRAP_RESAMPLES)


def fit_population(name: str, cases: list[Case], points: OperatingPoints) -> dict:
    logits = np.array([c.logit for c in cases])
    targets = np.array([c.label for c in cases])
    bundle_point = points.points[name]
    temperature = calibration.fit_temperature(logits, targets)
    threshold, criterion = calibration.choose_threshold(
        calibration.sigmoid(logits / temperature), targets)
    return {
        "temperature": temperature,
        "threshold": threshold,
        "criterion": criterion,
        "cases": len(cases),
        "positives": int(targets.sum()),
        "before": site_metrics(np.array([bundle_point.probability(x) for x in logits]), targets,
                               bundle_point.threshold),
        "after_cross_fitted": cross_fitted_metrics(logits, targets),
    }


def cross_fitted_metrics(logits: np.ndarray, targets: np.ndarray) -> dict:
    """The site point's metrics, each case judged by a point fitted on the other folds: its
    flag against its own fold's threshold (a margin above 0 is a flag)."""
    probabilities, thresholds = cross_fitted_probabilities(logits, targets)
    margins = probabilities - thresholds
    by_margin = {"sensitivity_at_threshold": lambda m, y: sensitivity(m, y, 0.0),
                 "specificity_at_threshold": lambda m, y: specificity(m, y, 0.0)}
    by_probability = {"auc": auc, "ece": expected_calibration_error}
    return {**with_bootstrap(by_probability, probabilities, targets, BOOTSTRAP_RESAMPLES),
            **with_bootstrap(by_margin, margins, targets, BOOTSTRAP_RESAMPLES)}


def calibrate_site(home: Path, labels_file: Path, inputs: list[Path],
                   models: Models | None = None) -> dict:
    """Fit, store and audit a new site overlay; return it (with its version)."""
    labels = read_labels(labels_file)
    files = dicom_files(inputs)
    if not files:
        raise SiteCalibrationError("no DICOM files given: pass the labelled studies' files or "
                                   "folders")
    models = models or Models.load()
    description = models.describe(home)
    pipeline = Pipeline(description, lambda images: _infer_now(models, images))
    points = description.operating_points()
    collected = collect(pipeline, points, labels, files)
    populations = {}
    for name in points.points:
        cases = [c for c in collected.cases if c.population == name]
        counts = [sum(c.label == label for c in cases) for label in (0, 1)]
        if min(counts) >= MIN_CASES_PER_CLASS:
            populations[name] = fit_population(name, cases, points)
    if not populations:
        raise SiteCalibrationError(_not_enough(collected, points))
    identity = ModelIdentity.of(models.cxr.metadata)
    overlay = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": identity.__dict__,
        "labels_sha256": hashlib.sha256(labels_file.read_bytes()).hexdigest(),
        "files": len(files), "unreadable": len(collected.unreadable),
        "failed_qc": collected.failed_qc, "unlabelled": collected.unlabelled,
        "labels_without_image": collected.labels_without_image,
        "populations": populations,
    }
    store = SiteCalibrationStore(home, identity.name)
    version = store.save(overlay)
    _audit(home, identity.name, version, "fitted on " + ", ".join(
        f"{p['cases']} {name} cases" for name, p in populations.items()))
    return {**overlay, "version": version}


async def _infer_now(models: Models, images):
    return models.infer(images)


def _not_enough(collected: Collected, points: OperatingPoints) -> str:
    counts = {name: (sum(c.population == name and c.label == 0 for c in collected.cases),
                     sum(c.population == name and c.label == 1 for c in collected.cases))
              for name in points.points}
    found = "; ".join(f"{name}: {normal} normal, {pneumonia} pneumonia"
                      for name, (normal, pneumonia) in counts.items())
    return (f"not enough usable labelled cases: at least {MIN_CASES_PER_CLASS} normal and "
            f"{MIN_CASES_PER_CLASS} pneumonia cases of one population (children under 18, or "
            f"adults) are needed; found {found} (besides {len(collected.unreadable)} unreadable "
            f"files, {collected.failed_qc} that failed QC, {collected.labels_without_image} "
            "labels without an image)")


def remove_site_calibration(home: Path, model_name: str) -> int | None:
    version = SiteCalibrationStore(home, model_name).remove()
    if version is not None:
        _audit(home, model_name, version, "removed")
    return version


def _audit(home: Path, model_name: str, version: int, detail: str) -> None:
    AuditTrail(home).record(f"cli:{getpass.getuser()}", Role.ADMIN, Permission.MODELS_MANAGE,
                            f"site-calibration/{model_name}/v{version}", "success", detail=detail)


def format_report(overlay: dict) -> str:
    lines = [f"site calibration v{overlay['version']} of {overlay['model']['name']} "
             f"{overlay['model']['version']} ({overlay['created']}): {overlay['files']} files, "
             f"{overlay['unreadable']} unreadable, {overlay['failed_qc']} failed QC, "
             f"{overlay['unlabelled']} without a label, {overlay['labels_without_image']} "
             "labels without an image"]
    for name, point in overlay["populations"].items():
        lines.append(f"{name}: {point['cases']} cases ({point['positives']} pneumonia); "
                     f"temperature {point['temperature']:.3f}, threshold {point['threshold']:.3f}")
        for metric in ("auc", "sensitivity_at_threshold", "specificity_at_threshold", "ece"):
            before, after = point["before"][metric], point["after_cross_fitted"][metric]
            lines.append(f"  {metric:<26} before {_interval(before)}   after {_interval(after)}")
    return "\n".join(lines)


def _interval(entry: dict) -> str:
    low, high = entry["ci95"]
    return f"{entry['value']:.3f} ({low:.3f}-{high:.3f})"
