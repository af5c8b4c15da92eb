"""The triage service's monitoring collectors on BentoML's `/metrics` (Prometheus).

- `clinassist_triage_score` (histogram, by population): the probabilities given;
- `clinassist_triage_flags_total` (by flag: urgent, routine, none when QC blocked the score);
- `clinassist_triage_qc_rejections_total` (by blocking reason code);
- `clinassist_triage_flag_rate`: share flagged urgent among the latest scored triages;
- `clinassist_drift_psi` (by population, feature): population stability index of the latest
  triages against the validation reference (`monitoring.Reference`);
  these two are recomputed from the store on a thread of their own, at most every REFRESH_S
  (reading the latest DRIFT_WINDOW triages took 20 ms, once per request before);
- `clinassist_feedback_readings_total` (by reading) and `clinassist_feedback_agreement` (by
  measure: sensitivity, specificity) of the flags against the latest readings.

`prometheus_client` is imported when the first collector is made, not at import: BentoML sets
`PROMETHEUS_MULTIPROC_DIR` in its workers after importing the service module, and a client
imported before that would never write where `/metrics` reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from clinassist.bundle import read_metadata
from clinassist.config import home_dir
from clinassist.serving.imaging.feedback import Feedback, FeedbackStore
from clinassist.serving.imaging.monitoring import (Agreement, ImageStats, MonitoringStore,
                                                   Reference, TriageEvent, drift)
from clinassist.serving.imaging.triage import CXR_BUNDLE

log = logging.getLogger(__name__)
DRIFT_WINDOW = 500  # latest triages the drift statistic and the flag rate are computed on
REFRESH_S = 1.0
AGREEMENT_WINDOW = 200  # latest readings the agreement is computed on
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


@dataclass(frozen=True)
class Collectors:
    score: Any
    flags: Any
    qc_rejections: Any
    flag_rate: Any
    psi: Any
    readings: Any
    agreement: Any


@cache
def collectors() -> Collectors:
    """The collectors, made once per process (a second registration would be refused)."""
    import prometheus_client as prom

    latest = {"multiprocess_mode": "mostrecent"}
    return Collectors(
        score=prom.Histogram("clinassist_triage_score", "Pneumonia probability of scored "
                             "triages", ["population"], buckets=SCORE_BUCKETS),
        flags=prom.Counter("clinassist_triage_flags", "Triages by flag (none: QC blocked "
                           "the score)", ["flag"]),
        qc_rejections=prom.Counter("clinassist_triage_qc_rejections", "Triages refused a "
                                   "score, by blocking QC reason", ["reason"]),
        flag_rate=prom.Gauge("clinassist_triage_flag_rate", "Share of the latest scored "
                             f"triages (up to {DRIFT_WINDOW}) flagged urgent", **latest),
        psi=prom.Gauge("clinassist_drift_psi", "Population stability index of the latest "
                       f"triages (up to {DRIFT_WINDOW}) against the validation reference",
                       ["population", "feature"], **latest),
        readings=prom.Counter("clinassist_feedback_readings", "Radiologist readings "
                              "received", ["reading"]),
        agreement=prom.Gauge("clinassist_feedback_agreement", "Sensitivity and specificity "
                             f"of the flags against the latest readings (up to "
                             f"{AGREEMENT_WINDOW})", ["measure"], **latest),
    )


class Coalesced:
    """`function` run on a daemon thread after each `request`, at most once every `every_s`:
    requests made meanwhile are served by one run."""

    def __init__(self, function: Callable[[], None], every_s: float, name: str) -> None:
        self._function, self._every_s = function, every_s
        self._due = threading.Event()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def request(self) -> None:
        self._due.set()

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            try:
                self._function()
            except Exception:  # e.g. the store locked too long: the next request retries
                log.exception("%s failed", threading.current_thread().name)
            time.sleep(self._every_s)


class ServiceMonitor:
    """Records each triage and reading durably and updates the collectors."""

    def __init__(self, home: Path, reference: Reference | None) -> None:
        self.store, self.feedback = MonitoringStore(home), FeedbackStore(home)
        self.reference = reference
        self.collectors = collectors()
        self._latest = Coalesced(self._refresh_latest, REFRESH_S, "monitoring-latest-window")

    def triage_completed(self, summary: dict, result_id: str, pixels: np.ndarray | None) -> None:
        event = TriageEvent.of(summary, result_id,
                               ImageStats.of(pixels) if pixels is not None else None)
        self.store.add(event)
        c = self.collectors
        c.flags.labels(flag=event.flag or "none").inc()
        for reason in event.blocking_reasons:
            c.qc_rejections.labels(reason=reason).inc()
        if event.probability is not None:
            c.score.labels(population=event.population).observe(event.probability)
        self._latest.request()

    def _refresh_latest(self) -> None:
        c = self.collectors
        latest = self.store.events(latest=DRIFT_WINDOW)
        scored = [e for e in latest if e.flag is not None]
        if scored:
            c.flag_rate.set(sum(e.flag == "urgent" for e in scored) / len(scored))
        if self.reference is not None:
            for (population, feature), value in drift(latest, self.reference).items():
                c.psi.labels(population=population, feature=feature).set(value)

    def feedback_recorded(self, feedback: Feedback) -> None:
        self.collectors.readings.labels(reading=feedback.reading.value).inc()
        agreement = Agreement.of(self.feedback.current()[-AGREEMENT_WINDOW:])
        for measure in ("sensitivity", "specificity"):
            if (value := getattr(agreement, measure)) is not None:
                self.collectors.agreement.labels(measure=measure).set(value)


_lock = threading.Lock()


def service_monitor(state: Any) -> ServiceMonitor:
    """The app's monitor (`state.monitor`), made on first use."""
    with _lock:
        if getattr(state, "monitor", None) is None:
            try:
                reference = Reference.load()
            except (OSError, ValueError, KeyError) as unreadable:  # triage goes on without drift
                log.warning("monitoring reference unreadable (%s); rerun `clinassist monitor "
                            "reference`", unreadable)
                reference = None
            served = read_metadata(CXR_BUNDLE)[1]["sha256"]
            if reference is not None and reference.model.get("sha256") != served:
                log.warning("monitoring reference is of another cxr bundle; drift is not "
                            "measured until `clinassist monitor reference` is rerun")
                reference = None
            state.monitor = ServiceMonitor(home_dir(), reference)
        return state.monitor


def record_triage(state: Any, summary: dict, result_id: str, pixels: np.ndarray) -> None:
    """Record a completed triage; its pixel statistics come from the pipeline's decoded image."""
    service_monitor(state).triage_completed(summary, result_id, pixels)
