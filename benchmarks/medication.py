"""Medication-risk speed (not a test): KB build time, review latency in process and over HTTP.

    .venv/bin/python benchmarks/medication.py                    # build + in-process latency
    .venv/bin/python benchmarks/medication.py --url http://127.0.0.1:3000 --key ca_...
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from clinassist.config import data_dir
from clinassist.serving.medication import kb_build
from clinassist.serving.medication.kb import KnowledgeBase
from clinassist.serving.medication.normalise import MedicationInput
from clinassist.serving.medication.patient import Patient
from clinassist.serving.medication.review import MedicationReview

TEN_DRUGS = ["warfarin", "Advil", "simvastatin", "clarithromycin", "metformin", "lisinopril",
             "amlodipine", "furosemide", "omeprazole", "acetaminophen"]
PATIENT = {"age": 78, "sex": "female", "egfr": 38, "allergies": ["penicillin"],
           "conditions": ["heart failure"]}


def percentiles(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"p50 {statistics.median(ms):.1f} ms, "
            f"p99 {ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.1f} ms")


def in_process(path: Path, requests: int) -> None:
    review = MedicationReview(KnowledgeBase(path))
    medications = [MedicationInput(name=name) for name in TEN_DRUGS]
    patient = Patient(78, "female", 38, ("penicillin",), ("heart failure",))
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        review.run(patient, medications)
        timings.append(time.perf_counter() - started)
    print(f"in process, 10 drugs: {percentiles(timings)}")


async def over_http(url: str, key: str, requests: int, concurrency: int) -> None:
    body = {"patient": PATIENT, "medications": [{"name": name} for name in TEN_DRUGS]}
    timings: list[float] = []
    queue = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in queue:
            started = time.perf_counter()
            response = await client.post("/v1/medication/risk", json=body)
            response.raise_for_status()
            timings.append(time.perf_counter() - started)

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        await warm_up(client, body)
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    print(f"HTTP, 10 drugs, concurrency {concurrency}: {percentiles(timings)}, "
          f"{requests / elapsed:.1f} requests/s")


async def warm_up(client: httpx.AsyncClient, body: dict) -> None:
    """A first request, so a KB built on first use is not timed."""
    (await client.post("/v1/medication/risk", json=body)).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--url", help="a running `clinassist serve`")
    parser.add_argument("--key", help="API key of a pharmacist")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kb.sqlite"
        meta = kb_build.build(data_dir(), path)
        print(f"KB build (default sources): {meta['build_seconds']} s, "
              f"{path.stat().st_size / 1e6:.1f} MB, version {meta['kb_version']}")
        in_process(path, args.requests)
    if args.url:
        asyncio.run(over_http(args.url, args.key or "", args.requests, args.concurrency))


if __name__ == "__main__":
    main()
