"""Drift and performance monitoring of the triage model: what is recorded per triage, the
validation reference it is compared with, the population stability index, and agreement with
the radiologists' feedback.

Each completed triage adds one row to the monitoring store (`CLINASSIST_HOME/monitoring.db`,
or the schema `monitoring` of PostgreSQL, which every API replica shares): time, population,
model version, QC outcome and blocking reasons, probability, flag, and three statistics of the
display-ready pixels; no identifier, only the opaque result id. The reference
(`models/<bundle>/monitoring_reference.json`, written by `clinassist monitor reference`) holds,
per population, the deciles of each feature on the bundle's validation images and the share of
images in each decile; the population stability index (PSI) of recent data against it says how
far the inputs and scores have moved. PSI above 0.25 is the usual mark of a significant shift.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import Column, Double, Integer, MetaData, Table, Text, select

from clinassist.config import bundle_dir
from clinassist.serving.imaging.feedback import Feedback, Reading
from clinassist.serving.storage import Store, StoreSchema

MONITORING_DB = "monitoring.db"
REFERENCE_FILE = "monitoring_reference.json"
REFERENCE_SCHEMA = 1
FEATURES = ("score", "mean_intensity", "std_intensity", "dark_fraction")
DARK = 0.2  # pixels below this (in [0, 1]) count as dark: air and background
PSI_ALERT = 0.25
PSI_FLOOR = 1e-4  # share given to an empty bin, so the logarithm stays finite
MIN_DRIFT_SAMPLES = 50
AGREEMENT_DROP_ALERT = 0.10  # sensitivity or specificity this far under validation
STATS_SIDE = 512  # pixel statistics are sampled to about this size (CR: within 1e-4 of all)
MIN_AGREEMENT_CASES = 20  # positives (for sensitivity) or negatives (for specificity)
POOLED = "all"
MONITORING = StoreSchema("monitoring", MONITORING_DB)
triage_event = Table(
    "triage_event", MetaData(), Column("id", Integer, primary_key=True),
    *(Column(name, Text, nullable=False) for name in (
        "recorded_at", "result_id", "population", "model_version")),
    Column("qc_passed", Integer, nullable=False), Column("blocking_reasons", Text, nullable=False),
    Column("probability", Double), Column("flag", Text),
    *(Column(name, Double) for name in ("mean_intensity", "std_intensity", "dark_fraction")))


@dataclass(frozen=True)
class ImageStats:
    """Simple statistics of a display-ready radiograph in [0, 1] (1 = white)."""

    mean_intensity: float
    std_intensity: float
    dark_fraction: float  # share of pixels below DARK

    @classmethod
    def of(cls, pixels: np.ndarray, white: float = 1.0) -> ImageStats:
        """Over a regular grid of at most about STATS_SIDE pixels on the long side (every
        pixel of a training image; a ninth of a 2,000-pixel radiograph's)."""
        step = max(1, max(pixels.shape) // STATS_SIDE)
        scaled = np.asarray(pixels[::step, ::step], dtype=np.float32) / white
        return cls(float(scaled.mean()), float(scaled.std()), float((scaled < DARK).mean()))


@dataclass(frozen=True)
class TriageEvent:
    recorded_at: str
    result_id: str
    population: str
    model_version: str
    qc_passed: bool
    blocking_reasons: tuple[str, ...]
    probability: float | None
    flag: str | None
    stats: ImageStats | None

    def feature(self, name: str) -> float | None:
        if name == "score":
            return self.probability
        return None if self.stats is None else getattr(self.stats, name)

    @classmethod
    def of(cls, summary: dict, result_id: str, stats: ImageStats | None) -> TriageEvent:
        """The event of one triage answer (its summary JSON), read defensively."""
        operating_point = summary.get("operating_point") or {}
        qc = summary.get("qc") or {}
        return cls(datetime.now(timezone.utc).isoformat(timespec="microseconds"), result_id,
                   str(operating_point.get("population") or POOLED),
                   str((summary.get("model") or {}).get("version", "")),
                   bool(qc.get("passed")),
                   tuple(r["code"] for r in qc.get("reasons", []) if r.get("blocking")),
                   summary.get("probability"), summary.get("flag"), stats)


@dataclass(frozen=True)
class Histogram:
    """A feature on the reference: inner decile edges and the share of images between them."""

    edges: list[float]
    proportions: list[float]

    @classmethod
    def fit(cls, values: Sequence[float], bins: int = 10) -> Histogram:
        values = np.asarray(values, dtype=np.float64)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, values, side="right"),
                             minlength=len(edges) + 1)
        return cls([float(e) for e in edges], [float(c) for c in counts / counts.sum()])

    def psi(self, values: Sequence[float]) -> float:
        """Population stability index of `values` against this histogram."""
        values = np.asarray(values, dtype=np.float64)
        counts = np.bincount(np.searchsorted(self.edges, values, side="right"),
                             minlength=len(self.edges) + 1)
        actual = np.maximum(counts / max(counts.sum(), 1), PSI_FLOOR)
        expected = np.maximum(np.asarray(self.proportions), PSI_FLOOR)
        return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class PopulationReference:
    images: int
    flag_rate: float
    sensitivity: float
    specificity: float
    features: dict[str, Histogram]


@dataclass(frozen=True)
class Reference:
    """The validation reference of one bundle (see the module docstring)."""

    model: dict
    populations: dict[str, PopulationReference]

    def for_population(self, population: str) -> PopulationReference:
        return self.populations.get(population) or self.populations[POOLED]

    def to_json(self) -> dict:
        return {"schema": REFERENCE_SCHEMA, "model": self.model, "features": list(FEATURES),
                "psi_alert": PSI_ALERT,
                "populations": {name: {"images": p.images, "flag_rate": p.flag_rate,
                                       "sensitivity": p.sensitivity,
                                       "specificity": p.specificity,
                                       "features": {f: {"edges": h.edges,
                                                        "proportions": h.proportions}
                                                    for f, h in p.features.items()}}
                                for name, p in self.populations.items()}}

    @classmethod
    def from_json(cls, data: dict) -> Reference:
        if data.get("schema") != REFERENCE_SCHEMA:
            raise ValueError(f"monitoring reference schema {data.get('schema')!r}; expected "
                             f"{REFERENCE_SCHEMA}: rerun `clinassist monitor reference`")
        return cls(data["model"], {
            name: PopulationReference(p["images"], p["flag_rate"], p["sensitivity"],
                                      p["specificity"],
                                      {f: Histogram(h["edges"], h["proportions"])
                                       for f, h in p["features"].items()})
            for name, p in data["populations"].items()})

    @classmethod
    def load(cls, path: Path | None = None) -> Reference | None:
        """The reference at `path` (default: beside the cxr bundle), or None if there is none."""
        path = path or bundle_dir("cxr_pneumonia") / REFERENCE_FILE
        return cls.from_json(json.loads(path.read_text())) if path.is_file() else None


def drift(events: Iterable[TriageEvent], reference: Reference) -> dict[tuple[str, str], float]:
    """PSI per (population, feature) of `events`, where at least MIN_DRIFT_SAMPLES have the
    feature: image statistics of every decoded image (a shift QC rejects is still a shift),
    the score of those QC let through."""
    by_population: dict[str, list[TriageEvent]] = {}
    for event in events:
        by_population.setdefault(event.population, []).append(event)
    result = {}
    for population, group in by_population.items():
        ref = reference.for_population(population)
        for name, histogram in ref.features.items():
            values = [v for e in group if (v := e.feature(name)) is not None]
            if len(values) >= MIN_DRIFT_SAMPLES:
                result[(population, name)] = histogram.psi(values)
    return result


@dataclass(frozen=True)
class Agreement:
    """The model's flag against the radiologists' newest readings (not_assessable left out):
    sensitivity = urgent among pneumonia, specificity = routine among no_pneumonia."""

    positives: int
    true_positives: int
    negatives: int
    true_negatives: int

    @classmethod
    def of(cls, readings: Iterable[Feedback]) -> Agreement:
        pairs = [(f.reading, f.flag) for f in readings
                 if f.flag is not None and f.reading != Reading.NOT_ASSESSABLE]
        positives = [flag for reading, flag in pairs if reading == Reading.PNEUMONIA]
        negatives = [flag for reading, flag in pairs if reading == Reading.NO_PNEUMONIA]
        return cls(len(positives), positives.count("urgent"), len(negatives),
                   negatives.count("routine"))

    @property
    def sensitivity(self) -> float | None:
        return self.true_positives / self.positives if self.positives else None

    @property
    def specificity(self) -> float | None:
        return self.true_negatives / self.negatives if self.negatives else None

    def falling(self, reference: PopulationReference) -> list[str]:
        """The measures that fell more than AGREEMENT_DROP_ALERT under validation, on enough
        cases to say so."""
        alerts = []
        for name, value, cases, expected in (
                ("sensitivity", self.sensitivity, self.positives, reference.sensitivity),
                ("specificity", self.specificity, self.negatives, reference.specificity)):
            if value is not None and cases >= MIN_AGREEMENT_CASES and \
                    value < expected - AGREEMENT_DROP_ALERT:
                alerts.append(f"{name} {value:.2f} on {cases} readings, validation "
                              f"{expected:.2f}")
        return alerts


class MonitoringStore:
    def __init__(self, home: Path) -> None:
        self._db = Store(home, MONITORING)

    def add(self, event: TriageEvent) -> None:
        stats = event.stats
        with self._db.write() as db:
            db.execute(triage_event.insert().values(
                recorded_at=event.recorded_at, result_id=event.result_id,
                population=event.population, model_version=event.model_version,
                qc_passed=int(event.qc_passed),
                blocking_reasons=json.dumps(list(event.blocking_reasons)),
                probability=event.probability, flag=event.flag,
                mean_intensity=stats.mean_intensity if stats else None,
                std_intensity=stats.std_intensity if stats else None,
                dark_fraction=stats.dark_fraction if stats else None))

    def events(self, since: str = "", latest: int | None = None) -> list[TriageEvent]:
        """Events recorded at or after `since` (ISO), oldest first; only the `latest` N if given."""
        newest = (select(triage_event).where(triage_event.c.recorded_at >= since)
                  .order_by(triage_event.c.id.desc()).limit(latest).subquery())
        with self._db.read() as db:
            rows = db.execute(select(newest).order_by(newest.c.id)).all()
        return [TriageEvent(
            row.recorded_at, row.result_id, row.population, row.model_version,
            bool(row.qc_passed), tuple(json.loads(row.blocking_reasons)), row.probability,
            row.flag, None if row.mean_intensity is None else ImageStats(
                row.mean_intensity, row.std_intensity, row.dark_fraction))
            for row in rows]


def finite(value: float | None) -> float:
    return math.nan if value is None else value
