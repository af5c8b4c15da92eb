"""Medication-risk speed (not a test): KB build time, review latency in process and over HTTP.

    .venv/bin/python benchmarks/medication.py                    # build + in-process latency
    .venv/bin/python benchmarks/medication.py --serve            # and over HTTP, own service
    .venv/bin/python benchmarks/medication.py --url http://127.0.0.1:3000 --key ca_...

In process, one thread: p50/p99 of a 10-drug review and its single-core rate (reviews per
second). Over HTTP (auth and audit on, at the concurrency): p50/p99 (goal p99 <= 30 ms) and
throughput against that single-core rate (goal >= 0.5). `--serve` starts `clinassist serve` in
a scratch CLINASSIST_HOME with a pharmacist user, with one API worker (the default) and then
two (`CLINASSIST_API_WORKERS=2`), and prints the resident memory of each of its processes
around the burst.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from service_process import start  # noqa: E402

from process_stats import (PeakMemory, load_average, memory_table,  # noqa: E402
                           named_processes, print_memory, settle_rss)
from clinassist.config import data_dir  # noqa: E402
from clinassist.serving.medication import kb_build  # noqa: E402
from clinassist.serving.medication.kb import KnowledgeBase  # noqa: E402
from clinassist.serving.medication.normalise import MedicationInput  # noqa: E402
from clinassist.serving.medication.patient import Patient  # noqa: E402
from clinassist.serving.medication.review import MedicationReview  # noqa: E402

TEN_DRUGS = ["warfarin", "Advil", "simvastatin", "clarithromycin", "metformin", "lisinopril",
             "amlodipine", "furosemide", "omeprazole", "acetaminophen"]
PATIENT = {"age": 78, "sex": "female", "egfr": 38, "allergies": ["penicillin"],
           "conditions": ["heart failure"]}


def p99(seconds: list[float]) -> float:
    ms = sorted(s * 1000 for s in seconds)
    return ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def percentiles(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"p50 {statistics.median(ms):.1f} ms, "
            f"p99 {ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.1f} ms")


def in_process(path: Path, requests: int) -> float:
    """Prints p50/p99 of one review at a time; returns reviews per second (one core)."""
    review = MedicationReview(KnowledgeBase(path))
    medications = [MedicationInput(name=name) for name in TEN_DRUGS]
    patient = Patient(78, "female", 38, ("penicillin",), ("heart failure",))
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        review.run(patient, medications)
        timings.append(time.perf_counter() - started)
    rate = len(timings) / sum(timings)
    print(f"in process, 10 drugs: {percentiles(timings)}, {rate:.0f} reviews/s on one core")
    return rate


async def over_http(url: str, key: str, requests: int, concurrency: int) -> tuple[float, float]:
    """Prints p50/p99 and throughput; returns (requests per second, p99 ms)."""
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
        await asyncio.gather(*(warm_up(client, body) for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    print(f"HTTP, 10 drugs, concurrency {concurrency}: {percentiles(timings)}, "
          f"{requests / elapsed:.1f} requests/s")
    return requests / elapsed, p99(timings)


def served(requests: int, concurrency: int, api_workers: int) -> tuple[float, float]:
    """`over_http` against a service of its own with `api_workers` API processes, with its
    processes' memory around the burst."""
    print(f"-- clinassist serve, CLINASSIST_API_WORKERS={api_workers}")
    with tempfile.TemporaryDirectory(prefix="medication-bench-") as home:
        service = start(Path(home), env={"CLINASSIST_API_WORKERS": str(api_workers)})
        try:
            processes = named_processes(service.process.pid)
            key = service.keys["pharmacist"]
            asyncio.run(over_http(service.url, key, 20, 1))  # the KB built, the routes warm
            idle = settle_rss(processes)
            with PeakMemory(processes) as peak:
                measured = asyncio.run(over_http(service.url, key, requests, concurrency))
            after = settle_rss(processes)
        finally:
            service.stop()
    print_memory(f"memory, {requests}-review burst at concurrency {concurrency}",
                 memory_table(idle, peak.peak, after))
    return measured


async def warm_up(client: httpx.AsyncClient, body: dict) -> None:
    """A first request on each of the client's connections, so neither a KB built on first use
    nor a connection's or an API worker's first request is timed."""
    (await client.post("/v1/medication/risk", json=body)).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--url", help="a running `clinassist serve`")
    parser.add_argument("--key", help="API key of a pharmacist")
    parser.add_argument("--serve", action="store_true", help="start a service of its own")
    args = parser.parse_args()
    print(f"start: {load_average()}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kb.sqlite"
        meta = kb_build.build(data_dir(), path)
        print(f"KB build (default sources): {meta['build_seconds']} s, "
              f"{path.stat().st_size / 1e6:.1f} MB, version {meta['kb_version']}")
        rate = in_process(path, args.requests)
    if args.serve:
        measured = {f"{workers} API worker(s)": served(args.requests, args.concurrency, workers)
                    for workers in (1, 2)}
    elif args.url:
        measured = {args.url: asyncio.run(over_http(args.url, args.key or "", args.requests,
                                                    args.concurrency))}
    else:
        return
    print(f"end: {load_average()}")
    for name, (throughput, tail) in measured.items():
        print(f"{name}: HTTP throughput / in-process single-core rate: {throughput / rate:.2f} "
              f"(goal >= 0.5); p99 {tail:.1f} ms (goal <= 30 ms)")


if __name__ == "__main__":
    main()
