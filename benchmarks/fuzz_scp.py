"""Fuzz campaign (not a test): raw C-STOREs of damaged DICOM data sets to a real gateway SCP.

    .venv/bin/python benchmarks/fuzz_scp.py [--examples 10000] [--seed 0]

Starts `python -m clinassist.serving.gateway serve` in a scratch CLINASSIST_HOME (no
destinations), sends `--examples` Hypothesis-generated inputs (tests/gateway_fuzz.py: the HTTP
fuzzer's damaged radiographs, byte-level damage and noise, and radiographs carrying the fake
patient's name or ID in IS, DS and UI values) over one association, waits for the instances it
accepted to be triaged, and prints the answers by status and error comment, the rule breakers
(no answer, pynetdicom's handler-exception status, a failure without an error comment), whether
the SCP still answers C-ECHO, the jobs per state, and the log lines that name the fake patient
or hold a traceback (all must be 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gateway_fuzz import (FAKE_PATIENT_ID, FAKE_PATIENT_NAME, StoreSender,  # noqa: E402
                          StoreTally, scp_payloads)
from test_gateway_support import GatewayProcess, echo, wait_for, write_config  # noqa: E402

from clinassist.serving.gateway.config import GatewayConfig  # noqa: E402
from clinassist.serving.gateway.gateway import open_queue  # noqa: E402

DRAIN_S = 1800  # the longest wait for accepted instances to be triaged


def campaign(port: int, examples: int, seed_value: int) -> StoreTally:
    tally, sender = StoreTally(), StoreSender(port)

    @seed(seed_value)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(scp_payloads())
    def store(payload: bytes) -> None:
        tally.record(*sender.send(payload))

    try:
        store()
    finally:
        sender.close()
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="pydicom")  # the client reading what it sends
    with tempfile.TemporaryDirectory(prefix="fuzz-scp-") as scratch:
        home = Path(scratch)
        config = GatewayConfig.load(write_config(home, workers=1, max_attempts=1))
        gateway = GatewayProcess(home, config.port).start()
        try:
            start = time.monotonic()
            tally = campaign(config.port, args.examples, args.seed)
            elapsed = time.monotonic() - start
            answers_echo = echo(config.port) == 0
            queue = open_queue(home, config)
            wait_for(lambda: queue.backlog() == 0, DRAIN_S, "accepted instances triaged")
            jobs = queue.counts()
            still_running = gateway.process.poll() is None
        finally:
            gateway.stop()
        log = (home / "gateway.log").read_text().splitlines()
    identifiers = (*FAKE_PATIENT_NAME.split("^"), FAKE_PATIENT_ID)
    print(json.dumps({
        **tally.report(), "seed": args.seed, "seconds": round(elapsed, 1),
        "stores_per_s": round(tally.sent / elapsed, 1), "rule_breakers": tally.failures[:20],
        "echo_after": answers_echo, "gateway_still_running": still_running, "jobs": jobs,
        "log_lines": len(log),
        "log_lines_naming_the_patient": sum(any(i in line for i in identifiers) for line in log),
        "log_tracebacks": sum("Traceback" in line for line in log),
    }, indent=2))


if __name__ == "__main__":
    main()
