"""Benchmark (not a test): the PACS path end to end, storescu -> Orthanc -> gateway -> Orthanc.

    .venv/bin/python benchmarks/gateway.py [--instances 500] [--workers 1] [--source RG1_UNCR]

Writes N copies of the real CR from $CLINASSIST_DATA/dicom_cr, each in its own study, sends
them into a scratch Orthanc with dcmtk's storescu (one association), and waits until Orthanc
holds an SR and a Secondary Capture for every study. The gateway runs as `python -m
clinassist.serving.gateway serve` in a scratch CLINASSIST_HOME. Prints sustained throughput
(instances per minute), end-to-end time per instance (Orthanc's reception of the CR to its
reception of the last result, 1 s resolution), results lost or duplicated (must be 0), and the
gateway's share of the end-to-end time (its audit trail: receive to last delivery, queueing
included).
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

from clinassist.config import data_dir  # noqa: E402
from clinassist.serving.gateway.orthanc import local  # noqa: E402

STALL_S = 180  # give up when Orthanc's instance count has not moved for this long


def write_copies(source: Path, folder: Path, count: int) -> None:
    """`count` copies of `source`, each a new study, series and instance."""
    folder.mkdir(parents=True)
    ds = pydicom.dcmread(source)
    for index in range(count):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.AccessionNumber = f"BENCH{index:05d}"
        ds.save_as(folder / f"{index:05d}.dcm")


def start_gateway(home: Path, port: int, orthanc_port: int, workers: int) -> subprocess.Popen:
    home.mkdir(parents=True)
    (home / "gateway.json").write_text(json.dumps({
        "allowed_calling_ae_titles": ["ORTHANC"], "port": port, "workers": workers,
        "destinations": [f"ORTHANC@127.0.0.1:{orthanc_port}"], "backoff_s": 1,
        "max_backoff_s": 5}))
    with open(home / "gateway.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "clinassist.serving.gateway", "serve"], cwd=home,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "CLINASSIST_HOME": str(home)})
    wait_for(lambda: echo(port, calling="ORTHANC") == 0, 60, "the gateway")
    return process


def wait_for_results(orthanc: local.LocalOrthanc, expected: int) -> None:
    count, moved = -1, time.monotonic()
    while count < expected:
        now = httpx.get(orthanc.url + "/statistics", timeout=10).json()["CountInstances"]
        if now != count:
            count, moved = now, time.monotonic()
        if time.monotonic() - moved > STALL_S:
            print(f"stalled at {count} of {expected} instances", file=sys.stderr)
            return
        time.sleep(1)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1, help="gateway worker threads")
    parser.add_argument("--source", default="RG1_UNCR", help="file in $CLINASSIST_DATA/dicom_cr")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as scratch:
        folder = Path(scratch)
        write_copies(data_dir() / "dicom_cr" / f"{args.source}.dcm", folder / "in", args.instances)
        gateway_port, orthanc_dicom = free_port(), free_port()
        orthanc = local.start(folder / "orthanc", free_port(), orthanc_dicom, gateway_port)
        gateway = start_gateway(folder / "home", gateway_port, orthanc_dicom, args.workers)
        try:
            start = time.monotonic()
            subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "+sd",
                            "127.0.0.1", str(orthanc_dicom), str(folder / "in")], check=True,
                           capture_output=True)
            sent = time.monotonic() - start
            wait_for_results(orthanc, 3 * args.instances)
            elapsed = time.monotonic() - start
            lost, duplicated, end_to_end = orthanc_outcome(orthanc)
            in_gateway = gateway_seconds(folder / "home")
        finally:
            os.killpg(gateway.pid, signal.SIGTERM)
            gateway.wait(timeout=60)
            orthanc.stop()
    report = {
        "instances": args.instances, "workers": args.workers, "source": args.source,
        "storescu_to_orthanc_s": round(sent, 1),
        "throughput_per_min": round(args.instances / elapsed * 60, 1),
        "end_to_end_s": {"p50": float(np.median(end_to_end)),
                         "p95": float(np.percentile(end_to_end, 95)),
                         "max": float(max(end_to_end))} if end_to_end else None,
        "lost": lost, "duplicated": duplicated,
        "gateway_share": round(sum(in_gateway) / sum(end_to_end), 2) if end_to_end else None,
        "gateway_s_per_instance_p50": round(float(np.median(in_gateway)), 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
