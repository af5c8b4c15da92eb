"""Interaction-model speed (not a test): what the model adds to a 10-drug review.

    .venv/bin/python benchmarks/ddi_predictor.py [--requests 300]

Prints the p50/p99 of one `predict` call for the 45 pairs of a 10-drug list (one ONNX call,
ONNX Runtime on one thread, as served), and a review's p50 with and without the model (their
difference is the added latency), with the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from clinassist.config import data_dir
from clinassist.serving.medication import kb_build
from clinassist.serving.medication.kb import KnowledgeBase
from clinassist.serving.medication.normalise import MedicationInput
from clinassist.serving.medication.patient import Patient
from clinassist.serving.medication.predictor import DrugBankPredictor
from clinassist.serving.medication.review import MedicationReview

TEN_DRUGS = ["warfarin", "Advil", "simvastatin", "clarithromycin", "metformin", "lisinopril",
             "amlodipine", "furosemide", "omeprazole", "acetaminophen"]


def timed(call, requests: int) -> list[float]:
    call()  # warm-up
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return timings


def summary(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"p50 {statistics.median(ms):.2f} ms, "
            f"p99 {ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kb.sqlite"
        kb_build.build(data_dir(), path)
        kb = KnowledgeBase(path)
        predictor = DrugBankPredictor()
        plain, with_model = MedicationReview(kb), MedicationReview(kb, predictor)
        medications = [MedicationInput(name=name) for name in TEN_DRUGS]
        resolved = plain.normaliser.resolve_all(medications)
        pairs = [(a, b) for i, m in enumerate(resolved) for n in resolved[i + 1:]
                 for a in m.ingredients for b in n.ingredients]
        model = timed(lambda: predictor.predict(pairs), args.requests)
        print(f"predict, {len(pairs)} pairs of a 10-drug list, one ONNX call: {summary(model)}")
        without = timed(lambda: plain.run(Patient(), medications), args.requests)
        inside = timed(lambda: with_model.run(Patient(), medications), args.requests)
        added = statistics.median(inside) - statistics.median(without)
        print(f"review without the model: {summary(without)}; with it: {summary(inside)}")
        print(f"added p50 {added * 1000:.2f} ms "
              f"({statistics.median(inside) / statistics.median(without):.2f}x)")


if __name__ == "__main__":
    main()
