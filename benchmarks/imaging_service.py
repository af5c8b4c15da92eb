"""Benchmark (not a test): the imaging triage service end to end over HTTP, on loopback.

    .venv/bin/python benchmarks/imaging_service.py [--requests 40] [--concurrency 8]

Starts `clinassist serve` twice in a scratch CLINASSIST_HOME (adaptive batching on, then off
with CLINASSIST_MAX_BATCH_SIZE=1) and sends the real CR from $CLINASSIST_DATA/dicom_cr. Prints
p50/p99 latency of one request at a time, throughput at the given concurrency, and the
service's own split of the time between decode, inference and result encoding.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from service_process import start  # noqa: E402

from clinassist.config import data_dir  # noqa: E402

TRIAGE = "/v1/imaging/triage"


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


def measure(home: Path, body: bytes, requests: int, concurrency: int, batch_size: int) -> dict:
    service = start(home, env={"CLINASSIST_MAX_BATCH_SIZE": str(batch_size)})
    try:
        url, headers = service.url + TRIAGE, {**service.headers("gateway"),
                                               "Content-Type": "application/dicom"}
        asyncio.run(sequential(url, headers, body, 2))
        alone = asyncio.run(sequential(url, headers, body, requests))
        seconds, together = asyncio.run(concurrent(url, headers, body, requests, concurrency))
    finally:
        service.stop()
    latencies = np.array([ms for ms, _ in alone])
    split = {part: float(np.median([answer["timings_ms"][part] for _, answer in alone]))
             for part in ("decode", "inference", "encode", "total")}
    return {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
            "throughput": requests / seconds, "split": split,
            "mean_batch": float(np.mean([answer["batch_size"] for _, answer in together]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    path = data_dir() / "dicom_cr" / "RG1_UNCR.dcm"
    body = path.read_bytes()
    with tempfile.TemporaryDirectory() as scratch:
        batched = measure(Path(scratch) / "batched", body, args.requests, args.concurrency, 16)
        unbatched = measure(Path(scratch) / "unbatched", body, args.requests, args.concurrency, 1)
    print(f"\n{path.name} ({len(body) / 1e6:.1f} MB), {args.requests} requests")
    print(f"one at a time: p50 {batched['p50']:.0f} ms, p99 {batched['p99']:.0f} ms")
    print("service split (median ms): " + ", ".join(f"{k} {v:.0f}" for k, v in batched["split"].items()))
    print(f"concurrency {args.concurrency}: {batched['throughput']:.2f} req/s with batching "
          f"(mean batch {batched['mean_batch']:.1f}), {unbatched['throughput']:.2f} req/s without "
          f"(ratio {batched['throughput'] / unbatched['throughput']:.2f})")


if __name__ == "__main__":
    main()
