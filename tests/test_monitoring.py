"""Drift and agreement monitoring on real radiographs: a reference built by the bundle on Kermany
images, then live triages of other Kermany images as they are (no drift), inverted and rescaled
(drift), recorded through the service's monitor and reported by `clinassist monitor report`."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from service_process import cli
from test_gateway_support import wait_for
from clinassist.serving.imaging.feedback import FeedbackStore, Reading
from clinassist.serving.imaging.monitoring import (PSI_ALERT, Histogram, MonitoringStore,
                                                   Reference, drift)
from clinassist.serving.imaging.monitoring_metrics import Coalesced, ServiceMonitor

SAMPLE = 300  # images drawn from the Kermany training split: half reference, half "live"
SEED = 14
POPULATION = "paediatric"


@pytest.fixture(scope="module")
def models():
    from clinassist.serving.imaging.triage import Models

    return Models.load(threads=2)


@pytest.fixture(scope="module")
def halves():
    """Two disjoint random halves of the same images: reference and live."""
    from clinassist.training import cxr_data, cxr_populations

    records = [r for r in cxr_data.read_manifest() if r.split == "train"]
    chosen = np.random.default_rng(SEED).choice(len(records), SAMPLE, replace=False)
    images = cxr_populations.kermany_images([records[i] for i in chosen], "monitoring test")
    return images, np.arange(SAMPLE) % 2 == 0


@pytest.fixture(scope="module")
def reference(models, halves, tmp_path_factory):
    from dataclasses import replace

    from clinassist.training.monitoring_reference import build_reference

    images, first = halves
    part = replace(images, pixels=images.pixels[first], targets=images.targets[first],
                   patients=images.patients[first])
    built = build_reference(models, {POPULATION: part})
    path = tmp_path_factory.mktemp("reference") / "monitoring_reference.json"
    path.write_text(json.dumps(built.to_json()))
    return path


@pytest.fixture(scope="module")
def live_scores(models, halves):
    """The live half's served scores, as they are, inverted and rescaled."""
    from clinassist.training.monitoring_reference import operating_point, served_probabilities

    images, first = halves
    temperature, threshold = operating_point(models.cxr.metadata, POPULATION)
    return threshold, {shift: (pixels, served_probabilities(models, pixels, temperature))
                       for shift, pixels in shifts(images.pixels[~first]).items()}


def shifts(pixels: np.ndarray) -> dict[str, np.ndarray]:
    as_float = pixels.astype(np.float32)
    return {"none": as_float, "inverted": 255 - as_float, "rescaled": as_float * 0.5}


def record(reference_path: Path, home: Path, threshold: float, pixels: np.ndarray,
           scores: np.ndarray) -> MonitoringStore:
    """Record the triage of each (8-bit, display-ready) image as the service's monitor does."""
    monitor = ServiceMonitor(home, Reference.load(reference_path))
    for index, (image, score) in enumerate(zip(pixels, scores)):
        summary = {"qc": {"passed": True, "reasons": []}, "probability": float(score),
                   "flag": "urgent" if score >= threshold else "routine",
                   "model": {"name": "cxr_pneumonia", "version": "test"},
                   "operating_point": {"population": POPULATION, "threshold": threshold}}
        monitor.triage_completed(summary, f"{index:032x}", image / 255)
    return monitor.store


def report(home: Path, reference: Path, output: Path):
    return cli(home, "monitor", "report", "--since", date.today().isoformat(), "--reference",
               str(reference), "--output", str(output))


@pytest.mark.parametrize("shift", ["none", "inverted", "rescaled"])
def test_a_simulated_shift_raises_the_drift_flag_and_unshifted_data_does_not(
        live_scores, reference, tmp_path, shift):
    threshold, by_shift = live_scores
    store = record(reference, tmp_path, threshold, *by_shift[shift])
    psi = drift(store.events(), Reference.load(reference))
    print(shift, {feature: round(value, 3) for (_, feature), value in psi.items()})
    run = report(tmp_path, reference, tmp_path / "report")
    if shift == "none":
        assert max(psi.values()) < PSI_ALERT, psi
        assert run.returncode == 0 and "No drift" in run.stdout, run.stdout + run.stderr
    else:
        assert run.returncode == 1 and "DRIFT" in run.stdout, run.stdout + run.stderr
    moved = {feature for (_, feature), value in psi.items() if value > PSI_ALERT}
    if shift == "inverted":  # bone dark, air bright: the model's scores and the dark share move
        assert moved >= {"score", "dark_fraction"}, psi
    if shift == "rescaled":  # half the contrast: the graph normalises each image, scores stay
        assert moved >= {"mean_intensity", "std_intensity", "dark_fraction"}, psi
        assert "score" not in moved, psi
    written = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert written == ["agreement.png", "drift.png", "monitoring_report.md", "qc_rejections.png",
                       "scores_and_flags.png"]
    assert all((tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
               for name in written if name.endswith(".png"))


def test_falling_agreement_is_said_plainly(reference, tmp_path):
    store = FeedbackStore(tmp_path)
    for index in range(30):  # every pneumonia read by the radiologist was flagged routine
        summary = {"id": f"{index:032x}", "flag": "routine", "probability": 0.1,
                   "model": {"name": "cxr_pneumonia", "version": "test"}}
        store.add(summary, Reading.PNEUMONIA, None, "dr-test")
    run = report(tmp_path, reference, tmp_path / "report")
    assert run.returncode == 1
    assert "AGREEMENT FALLING: sensitivity 0.00 on 30 readings" in run.stdout


def test_too_few_readings_are_not_judged(reference, tmp_path):
    run = report(tmp_path, reference, tmp_path / "report")
    assert "Too few readings to judge agreement" in run.stdout
    assert "Too few triages to measure drift" in run.stdout and run.returncode == 0


def test_psi_is_zero_on_the_reference_itself_and_large_on_disjoint_values():
    values = np.random.default_rng(0).normal(size=5000)
    histogram = Histogram.fit(values)
    assert histogram.psi(values) == pytest.approx(0.0, abs=1e-9)
    assert histogram.psi(values + 10) > 5


def test_the_latest_window_gauges_are_refreshed_once_for_triages_that_come_together():
    runs: list[float] = []
    refresh = Coalesced(lambda: runs.append(time.monotonic()), every_s=0.05, name="test-refresh")
    for _ in range(50):
        refresh.request()
    wait_for(lambda: runs, 10, "the first refresh")
    time.sleep(0.3)  # six refresh intervals: no request is left unserved
    assert 1 <= len(runs) <= 2  # the first request's run, and one for all that came during it
    served = len(runs)
    refresh.request()
    wait_for(lambda: len(runs) == served + 1, 10, "a refresh for the later triage")
