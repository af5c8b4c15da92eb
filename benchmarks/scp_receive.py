"""Benchmark (not a test): the CPU a pynetdicom Storage SCP spends receiving the real CR, one
association per instance proposed the way Orthanc proposes it (126 presentation contexts),
with pynetdicom's own 4 KiB socket reads and with the gateway's whole-PDU reads.

    .venv/bin/python benchmarks/scp_receive.py [--instances 40] [--rounds 3]

Each round starts an SCP process of each kind in turn (the SCP accepts what the gateway
accepts, 1 MiB PDUs, and takes the encoded dataset as the gateway does) and prints its CPU per
instance; then the ratio of the medians (whole-PDU over pynetdicom's own).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import psutil
from pydicom import dcmread
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, evt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from service_process import free_port  # noqa: E402

from clinassist.config import data_dir  # noqa: E402
from clinassist.serving.gateway.pdu_reads import read_whole_pdus  # noqa: E402
from clinassist.serving.gateway.scp import MAX_PDU_BYTES, RADIOGRAPH_STORAGE  # noqa: E402

ORTHANC_SOP_CLASSES = 63  # each proposed twice, with the three uncompressed transfer syntaxes
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]


def serve(whole_pdus: bool, port: int, ready) -> None:
    if whole_pdus:
        read_whole_pdus()
    ae = AE(ae_title="GATEWAY")
    ae.maximum_pdu_size = MAX_PDU_BYTES
    for sop_class in RADIOGRAPH_STORAGE:
        ae.add_supported_context(sop_class, UNCOMPRESSED)
    ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, _take)])
    ready.set()
    time.sleep(3600)


def _take(event: evt.Event) -> int:
    event.encoded_dataset()  # what the gateway's intake is handed
    return 0x0000


def cpu_ms_per_instance(whole_pdus: bool, instance, count: int) -> float:
    ready, port = multiprocessing.Event(), free_port()
    scp = multiprocessing.Process(target=serve, args=(whole_pdus, port, ready), daemon=True)
    scp.start()
    ready.wait()
    scu = AE(ae_title="ORTHANC")
    for context in StoragePresentationContexts[:ORTHANC_SOP_CLASSES]:
        for _ in range(2):
            scu.add_requested_context(context.abstract_syntax, UNCOMPRESSED)
    process = psutil.Process(scp.pid)
    before = sum(process.cpu_times()[:2])
    for _ in range(count):
        association = scu.associate("127.0.0.1", port, ae_title="GATEWAY", max_pdu=MAX_PDU_BYTES)
        assert association.send_c_store(instance).Status == 0x0000
        association.release()
    time.sleep(0.3)  # the last association's threads end
    used = sum(process.cpu_times()[:2]) - before
    scp.terminate()
    return 1000 * used / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source", default="RG1_UNCR", help="file in $CLINASSIST_DATA/dicom_cr")
    args = parser.parse_args()
    instance = dcmread(data_dir() / "dicom_cr" / f"{args.source}.dcm")
    measured: dict[str, list[float]] = {"pynetdicom's reads": [], "whole-PDU reads": []}
    for round_ in range(args.rounds):
        for name, whole_pdus in (("pynetdicom's reads", False), ("whole-PDU reads", True)):
            measured[name].append(cpu_ms_per_instance(whole_pdus, instance, args.instances))
            print(f"round {round_ + 1}, {name}: {measured[name][-1]:.1f} ms CPU per instance")
    stock, whole = (statistics.median(v) for v in measured.values())
    print(f"SCP CPU per received instance, medians: {stock:.1f} ms with pynetdicom's reads, "
          f"{whole:.1f} ms with whole-PDU reads: {whole / stock:.2f}x")


if __name__ == "__main__":
    main()
