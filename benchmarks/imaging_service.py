"""Benchmark (not a test): the imaging triage service end to end over HTTP, on loopback.

    .venv/bin/python benchmarks/imaging_service.py [--requests 100] [--concurrency 8]

First the work itself, in this process: decode (`read_instance`, `radiograph_pixels`) and
inference (`Models.infer`, both bundles) of the real CR from $CLINASSIST_DATA/dicom_cr, CPU
and wall time per image. Then `clinassist serve` three times in a scratch CLINASSIST_HOME (the
default: adaptive batching off, one API worker; batching on with CLINASSIST_MAX_BATCH_SIZE=16;
batching off with CLINASSIST_API_WORKERS=2), each sent the CR one at a time and then at the
given concurrency. Prints, from that one run:

- p50/p99 of one request at a time, the service's own split (decode, inference including the
  hop to the model service; encoding of the SR and Secondary Capture when a request built them
  before answering), and p50 over decode + inference of the same requests (goal <= 1.5); how
  many answers came before their objects were built, and that every result has them in the end;
- throughput at the concurrency against cores / CPU time of decode + inference per image
  (goal >= 0.5), and the CPU time every service process spent per request;
- batching on against off, and two API workers against one;
- resident memory of each service process at idle, at its peak during the concurrent burst and
  at idle after it (goal: growth after the burst <= 20 %), and in the default phase the same
  for a second burst, from the idle after the first: what a burst leaves varies (here +6 to
  +36 % after a fresh API worker's first burst, mostly within 3 % after later ones: memory
  allocated outside Python's accounting that a later burst releases, see the README), so one
  burst's figure alone does not tell growth that adds up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from service_process import start  # noqa: E402

from process_stats import (PeakMemory, cpu_seconds, load_average, memory_table,  # noqa: E402
                           named_processes, print_memory, settle_rss)
from clinassist.config import data_dir  # noqa: E402
from clinassist.serving.dicom import Limits, radiograph_pixels, read_instance  # noqa: E402
from clinassist.serving.imaging.results_store import ResultStore, results_dir  # noqa: E402
from clinassist.serving.imaging.triage import Models  # noqa: E402

TRIAGE = "/v1/imaging/triage"
DEFAULT, BATCHED = "batching off, 1 API worker (the default)", "batching on (max 16)"
PHASES = {DEFAULT: {"CLINASSIST_MAX_BATCH_SIZE": "1"}, BATCHED: {"CLINASSIST_MAX_BATCH_SIZE": "16"},
          "batching off, 2 API workers": {"CLINASSIST_API_WORKERS": "2"}}


@dataclass(frozen=True)
class Work:
    """Decode and inference of one image in process: median CPU and wall milliseconds."""

    decode_cpu: float
    decode_wall: float
    inference_cpu: float
    inference_wall: float

    @property
    def cpu(self) -> float:
        return self.decode_cpu + self.inference_cpu


def reference_work(body: bytes, runs: int = 9) -> Work:
    models = Models.load(home=Path(tempfile.mkdtemp(prefix="bench-models-")))
    models.infer([radiograph_pixels(read_instance(body, Limits()))])  # warm up ONNX Runtime
    samples = []
    for _ in range(runs):
        cpu, wall = time.process_time(), time.perf_counter()
        pixels = radiograph_pixels(read_instance(body, Limits()))
        decoded = time.process_time(), time.perf_counter()
        models.infer([pixels])
        samples.append((decoded[0] - cpu, decoded[1] - wall, time.process_time() - decoded[0],
                        time.perf_counter() - decoded[1]))
    return Work(*(float(np.median(column)) * 1000 for column in zip(*samples)))


async def send(client: httpx.AsyncClient, url: str, headers: dict, body: bytes) -> tuple[float, dict]:
    began = time.perf_counter()
    response = await client.post(url, content=body, headers=headers)
    response.raise_for_status()
    return (time.perf_counter() - began) * 1000, response.json()


async def sequential(url: str, headers: dict, body: bytes, count: int) -> list[tuple[float, dict]]:
    async with httpx.AsyncClient(timeout=300) as client:
        return [await send(client, url, headers, body) for _ in range(count)]


async def concurrent(url: str, headers: dict, body: bytes, count: int,
                     concurrency: int) -> tuple[float, list[tuple[float, dict]]]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300) as client:
        async def one():
            async with limit:
                return await send(client, url, headers, body)
        began = time.perf_counter()
        answers = await asyncio.gather(*[one() for _ in range(count)])
        return time.perf_counter() - began, answers


def measure(home: Path, body: bytes, requests: int, concurrency: int, env: dict,
            second_burst: bool = False) -> dict:
    service = start(home, env=env)
    try:
        url, headers = service.url + TRIAGE, {**service.headers("gateway"),
                                               "Content-Type": "application/dicom"}
        asyncio.run(sequential(url, headers, body, 3))
        processes = named_processes(service.process.pid)
        alone = asyncio.run(sequential(url, headers, body, requests))
        idle = settle_rss(processes)
        cpu_before = cpu_seconds(processes)
        with PeakMemory(processes) as peak:
            seconds, together = asyncio.run(concurrent(url, headers, body, requests,
                                                       concurrency))
        cpu_after = cpu_seconds(processes)
        after = settle_rss(processes)
        memory, again = memory_table(idle, peak.peak, after), None
        if second_burst:
            with PeakMemory(processes) as peak_again:
                asyncio.run(concurrent(url, headers, body, requests, concurrency))
            again = memory_table(after, peak_again.peak, settle_rss(processes))
        deferred = sum("encode" not in answer["timings_ms"] for _, answer in alone + together)
        left_pending = objects_left_pending(home)
    finally:
        service.stop()
    latencies = np.array([ms for ms, _ in alone])
    split = {part: float(np.median([answer["timings_ms"][part] for _, answer in alone]))
             for part in ("decode", "inference", "encode", "total")
             if all(part in answer["timings_ms"] for _, answer in alone)}
    return {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
            "throughput": requests / seconds, "split": split,
            "cpu_ms": {name: (cpu_after[name] - cpu_before[name]) / requests * 1000
                       for name in cpu_before},
            "memory": memory, "memory_again": again,
            "mean_batch": float(np.mean([answer["batch_size"] for _, answer in together])),
            "deferred": deferred, "left_pending": left_pending}


def objects_left_pending(home: Path, wait_s: float = 60) -> int:
    """Results whose SR and SC are still unbuilt `wait_s` after the last answer (must be 0)."""
    store, deadline = ResultStore(results_dir(home)), time.monotonic() + wait_s
    while store.pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(store.pending())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    path = data_dir() / "dicom_cr" / "RG1_UNCR.dcm"
    body = path.read_bytes()
    cores = os.cpu_count() or 1
    print(f"start: {load_average()}")
    work = reference_work(body)
    with tempfile.TemporaryDirectory() as scratch:
        runs = {name: measure(Path(scratch) / str(index), body, args.requests, args.concurrency,
                              env, second_burst=name == DEFAULT)
                for index, (name, env) in enumerate(PHASES.items())}
    off, on = runs[DEFAULT], runs[BATCHED]
    print(f"end: {load_average()}")
    print(f"\n{path.name} ({len(body) / 1e6:.1f} MB), {args.requests} requests per phase")
    print(f"in process, per image: decode {work.decode_cpu:.0f} ms CPU ({work.decode_wall:.0f} "
          f"ms wall), inference {work.inference_cpu:.0f} ms CPU ({work.inference_wall:.0f} ms "
          "wall)")
    split = off["split"]
    print(f"one at a time: p50 {off['p50']:.0f} ms, p99 {off['p99']:.0f} ms; service split "
          "(median ms): " + ", ".join(f"{k} {v:.0f}" for k, v in split.items()))
    print(f"  SR and SC built after the answer for {off['deferred']} of {2 * args.requests} "
          f"requests; results still without them a minute later: {off['left_pending']} (must "
          "be 0)")
    work_ms = split["decode"] + split["inference"]
    print(f"  p50 / (decode + inference) = {off['p50'] / work_ms:.2f} (goal <= 1.5)")
    ideal = cores / (work.cpu / 1000)
    for name, run in runs.items():
        spent = sum(run["cpu_ms"].values())
        print(f"concurrency {args.concurrency}, {name}: {run['throughput']:.2f} req/s "
              f"(mean batch {run['mean_batch']:.1f}); {run['throughput'] / ideal:.2f} of "
              f"{cores} cores / {work.cpu:.0f} ms CPU of decode + inference = {ideal:.1f} req/s "
              "(goal >= 0.5)")
        print(f"  service CPU per request {spent:.0f} ms (" + ", ".join(
            f"{process} {ms:.0f}" for process, ms in run["cpu_ms"].items() if ms >= 0.5) +
            f"): decode + inference are {work.cpu / spent:.2f} of it")
    two = runs["batching off, 2 API workers"]
    print(f"at concurrency {args.concurrency}: batching on / off "
          f"{on['throughput'] / off['throughput']:.2f}; 2 API workers / 1 "
          f"{two['throughput'] / off['throughput']:.2f}")
    print_memory(f"memory, {DEFAULT}, {args.requests}-request burst at concurrency "
                 f"{args.concurrency}", off["memory"])
    print_memory("  the same service, a second burst", off["memory_again"])


if __name__ == "__main__":
    main()
