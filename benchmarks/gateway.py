"""Benchmark (not a test): the PACS path end to end, storescu -> Orthanc -> gateway -> Orthanc,
against Orthanc's own ingest of the same files in the same run.

    .venv/bin/python benchmarks/gateway.py [--instances 500] [--workers 4] [--source RG1_UNCR]

Writes N copies of the real CR from $CLINASSIST_DATA/dicom_cr, each in its own study, then:

1. Orthanc alone (no routing): dcmtk's storescu sends the N files over one association;
   Orthanc's ingest rate is N over the time storescu takes.
2. A fresh Orthanc routing to `python -m clinassist.serving.gateway serve` (scratch
   CLINASSIST_HOME): two warm-up instances, then the same N files as a burst; sustained
   throughput is N over the time until Orthanc holds an SR and a Secondary Capture for every
   study (goal >= 0.7 of Orthanc's own ingest). Results lost or duplicated (must be 0), the
   end-to-end time per instance (Orthanc's reception of the CR to that of its last result, 1 s
   resolution) and the gateway's share of it (its audit trail: receive to delivery).
3. Single instances arriving alone, one after the other once the burst is done: end-to-end p50,
   storescu's start to both results in Orthanc.

CPU time per instance of each process during the burst (the gateway, its object builder,
Orthanc; storescu's is not counted). Resident memory of the gateway and Orthanc at idle before
the burst, at its peak, and at idle after it (goal: growth after the burst <= 20 %).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from service_process import free_port  # noqa: E402
from test_gateway_support import echo, wait_for  # noqa: E402

from process_stats import (PeakMemory, cpu_seconds, load_average, memory_table,  # noqa: E402
                           named_processes, print_memory, settle_rss)
from clinassist.config import data_dir  # noqa: E402
from clinassist.serving.gateway.config import GatewayConfig  # noqa: E402
from clinassist.serving.gateway.orthanc import local  # noqa: E402

STALL_S = 180  # give up when Orthanc's instance count has not moved for this long
SINGLES = 5


def write_copies(source: Path, folder: Path, count: int, prefix: str) -> list[Path]:
    """`count` copies of `source`, each a new study, series and instance."""
    folder.mkdir(parents=True)
    ds = pydicom.dcmread(source)
    paths = []
    for index in range(count):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.AccessionNumber = f"{prefix}{index:05d}"
        paths.append(folder / f"{index:05d}.dcm")
        ds.save_as(paths[-1])
    return paths


def storescu(port: int, *paths: Path) -> float:
    """Send over one association; the seconds it took."""
    began = time.monotonic()
    subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1", str(port),
                    *map(str, paths)], check=True, capture_output=True)
    return time.monotonic() - began


def start_gateway(home: Path, port: int, orthanc_port: int, workers: int) -> subprocess.Popen:
    home.mkdir(parents=True)
    (home / "gateway.json").write_text(json.dumps({
        "allowed_calling_ae_titles": ["ORTHANC"], "port": port, "workers": workers,
        "destinations": [f"ORTHANC@127.0.0.1:{orthanc_port}"], "backoff_s": 1,
        "max_backoff_s": 5}))
    with open(home / "gateway.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "clinassist.serving.gateway", "serve"],
                                   cwd=home, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True,
                                   env={**os.environ, "CLINASSIST_HOME": str(home)})
    wait_for(lambda: echo(port, calling="ORTHANC") == 0, 600, "the gateway")
    return process


def instance_count(orthanc: local.LocalOrthanc) -> int:
    return httpx.get(orthanc.url + "/statistics", timeout=10).json()["CountInstances"]


def wait_for_results(orthanc: local.LocalOrthanc, expected: int, poll_s: float = 0.5) -> None:
    count, moved = -1, time.monotonic()
    while count < expected:
        now = instance_count(orthanc)
        if now != count:
            count, moved = now, time.monotonic()
        if time.monotonic() - moved > STALL_S:
            print(f"stalled at {count} of {expected} instances", file=sys.stderr)
            return
        time.sleep(poll_s)


def reception(orthanc: local.LocalOrthanc, instance: str) -> datetime:
    text = httpx.get(f"{orthanc.url}/instances/{instance}/metadata/ReceptionDate",
                     timeout=10).text
    return datetime.strptime(text, "%Y%m%dT%H%M%S")


def orthanc_outcome(orthanc: local.LocalOrthanc) -> tuple[int, int, list[float]]:
    """Studies lacking an SR or SC, studies with more than one of either, end-to-end seconds."""
    by_study: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for series in httpx.get(orthanc.url + "/series?expand", timeout=60).json():
        modality = series["MainDicomTags"].get("Modality", "")
        by_study[series["ParentStudy"]][modality].extend(series["Instances"])
    lost = duplicated = 0
    seconds = []
    for kinds in by_study.values():
        lost += not (kinds["SR"] and kinds["OT"])
        duplicated += len(kinds["SR"]) > 1 or len(kinds["OT"]) > 1
        if kinds["CR"] and kinds["SR"] and kinds["OT"]:
            back = max(reception(orthanc, kinds[m][0]) for m in ("SR", "OT"))
            seconds.append((back - reception(orthanc, kinds["CR"][0])).total_seconds())
    return lost, duplicated, seconds


def gateway_seconds(home: Path) -> list[float]:
    """Per job: first receive to last delivery, from the gateway's audit trail."""
    times: dict[str, list[datetime]] = defaultdict(list)
    with sqlite3.connect(home / "audit.db") as db:
        for resource, recorded in db.execute("SELECT resource, recorded FROM audit_event WHERE "
                                             "action IN ('gateway:receive', 'gateway:deliver')"):
            times[resource].append(datetime.fromisoformat(recorded))
    return [(max(t) - min(t)).total_seconds() for t in times.values() if len(t) > 1]


def orthanc_ingest(folder: Path, paths: list[Path]) -> float:
    """Instances per second Orthanc alone stores of `paths`, sent by storescu."""
    orthanc = local.start(folder, free_port(), free_port(), None)
    try:
        seconds = storescu(orthanc.dicom_port, *paths)
        assert instance_count(orthanc) == len(paths)
    finally:
        orthanc.stop()
    return len(paths) / seconds


def single_seconds(orthanc: local.LocalOrthanc, paths: list[Path]) -> list[float]:
    """End to end for each instance sent alone: storescu's start to its SR and SC stored."""
    seconds = []
    for path in paths:
        expected = instance_count(orthanc) + 3
        began = time.monotonic()
        storescu(orthanc.dicom_port, path)
        wait_for(lambda: instance_count(orthanc) >= expected, STALL_S, "the results")
        seconds.append(time.monotonic() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--workers", type=int, default=GatewayConfig.workers,
                        help="gateway worker threads (default: the gateway's)")
    parser.add_argument("--source", default="RG1_UNCR", help="file in $CLINASSIST_DATA/dicom_cr")
    args = parser.parse_args()
    print(f"start: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as scratch:
        folder = Path(scratch)
        source = data_dir() / "dicom_cr" / f"{args.source}.dcm"
        burst = write_copies(source, folder / "burst", args.instances, "BENCH")
        warm_up = write_copies(source, folder / "warm-up", 2, "WARM")
        singles = write_copies(source, folder / "singles", SINGLES, "ALONE")
        ingest = orthanc_ingest(folder / "orthanc-alone", burst)

        gateway_port, orthanc_dicom = free_port(), free_port()
        orthanc = local.start(folder / "orthanc", free_port(), orthanc_dicom, gateway_port)
        gateway = start_gateway(folder / "home", gateway_port, orthanc_dicom, args.workers)
        try:
            processes = {**named_processes(gateway.pid), **named_processes(orthanc.process.pid)}
            storescu(orthanc_dicom, *warm_up)
            wait_for_results(orthanc, 3 * len(warm_up))
            idle = settle_rss(processes)
            with PeakMemory(processes) as peak:
                cpu_before, start = cpu_seconds(processes), time.monotonic()
                sent = storescu(orthanc_dicom, *burst)
                wait_for_results(orthanc, 3 * (len(warm_up) + args.instances))
                elapsed = time.monotonic() - start
                cpu_after = cpu_seconds(processes)
            after = settle_rss(processes)
            lost, duplicated, end_to_end = orthanc_outcome(orthanc)
            in_gateway = gateway_seconds(folder / "home")
            alone = single_seconds(orthanc, singles)
        finally:
            os.killpg(gateway.pid, signal.SIGTERM)
            gateway.wait(timeout=60)
            orthanc.stop()
    print(f"end: {load_average()}")
    throughput = args.instances / elapsed
    report = {
        "instances": args.instances, "workers": args.workers, "source": args.source,
        "orthanc_alone_ingest_per_s": round(ingest, 2),
        "storescu_to_orthanc_s": round(sent, 1),
        "throughput_per_s": round(throughput, 2),
        "throughput_over_orthanc_ingest": round(throughput / ingest, 2),
        "end_to_end_s": {"p50": float(np.median(end_to_end)),
                         "p95": float(np.percentile(end_to_end, 95)),
                         "max": float(max(end_to_end))} if end_to_end else None,
        "lost": lost, "duplicated": duplicated,
        "gateway_share": round(sum(in_gateway) / sum(end_to_end), 2) if end_to_end else None,
        "gateway_s_per_instance_p50": round(float(np.median(in_gateway)), 2),
        "cpu_ms_per_instance": {name: round(1000 * (cpu_after[name] - cpu_before[name])
                                            / args.instances, 1) for name in cpu_before},
        "single_instance_end_to_end_s": {"p50": round(float(np.median(alone)), 2),
                                         "all": [round(s, 2) for s in alone]},
    }
    print(json.dumps(report, indent=2))
    print(f"throughput {throughput:.2f}/s against Orthanc's own ingest {ingest:.2f}/s: "
          f"{throughput / ingest:.2f} (goal >= 0.7); lost {lost}, duplicated {duplicated}; "
          f"an instance alone: p50 {np.median(alone):.2f} s end to end")
    print_memory(f"memory, {args.instances}-instance burst", memory_table(idle, peak.peak, after))


if __name__ == "__main__":
    main()
