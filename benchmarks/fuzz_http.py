"""Benchmark (not a test): fuzz every HTTP entry point of a started `clinassist serve`.

    .venv/bin/python benchmarks/fuzz_http.py [--inputs 10000] [--concurrency 4] [--seed 1]
                                             [--only LABEL ...]

Starts the service in a scratch CLINASSIST_HOME (one user per role), then sends `--inputs`
inputs to each entry point: Hypothesis-generated DICOM to `POST /v1/imaging/triage` as one
instance, as multipart/related and as multipart/form-data, and Schemathesis cases generated from
the service's own /docs.json to every other /v1 operation (tests/http_fuzz.py has the
strategies). Prints, per entry point, the answers by status (a multipart answer's parts as
"part NNN"), the dropped connections and the rejects that were not JSON {error, reason}; then
whether /readyz still answers and how many lines of the service's log name the fake patient
every DICOM input carries. An operation with fewer distinct inputs than asked (no parameters,
or only an enumeration) stops when Hypothesis has generated them all.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from http_fuzz import (TRIAGE, TRIAGE_KINDS, Tally, fuzz_operation, fuzz_triage,  # noqa: E402
                       is_ready, known_path_values, leaked_identifiers, openapi_operations)
from service_process import start  # noqa: E402

ROUND = 2000  # inputs per Hypothesis campaign; campaigns with the next seeds follow until done


def fuzz(entry_point: str, campaign, wanted: int, seed: int) -> tuple[Tally, float]:
    """Campaigns of up to ROUND inputs, each with its own seed, until `wanted` were sent or one
    came back short (Hypothesis had no new input left)."""
    total, began, round_seed = Tally(), time.monotonic(), seed
    while total.sent < wanted:
        asked = min(ROUND, wanted - total.sent)
        tally = campaign(asked, round_seed)
        total.statuses.update(tally.statuses)
        total.codes.update(tally.codes)
        total.dropped += tally.dropped
        total.unexplained += tally.unexplained
        total.server_errors += tally.server_errors
        round_seed += 1
        if tally.sent < asked:
            break
    return total, time.monotonic() - began


def report(entry_point: str, tally: Tally, seconds: float) -> None:
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(tally.statuses.items()))
    print(f"{entry_point:<48} {tally.sent:>6} inputs in {seconds:6.0f} s | {statuses} | "
          f"dropped {len(tally.dropped)}, not {{error, reason}} {len(tally.unexplained)}",
          flush=True)
    for failure in tally.server_errors[:3] + tally.dropped[:3] + tally.unexplained[:3]:
        print(f"    {failure[:400]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000, help="per entry point")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="entry points to fuzz (labels as printed)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="clinassist-fuzz-") as scratch:
        service = start(Path(scratch))
        try:
            run(service, args)
        finally:
            service.stop()
        leaks = leaked_identifiers((service.home / "service.log").read_text())
        print(f"log lines naming the fake patient: {len(leaks)}")
        for line in leaks[:5]:
            print(f"    {line[:300]}")


def run(service, args: argparse.Namespace) -> None:
    wanted = set(args.only or [])
    radiologist, admin = service.headers("radiologist"), service.headers("admin")
    entry_points = {f"POST {TRIAGE} ({kind})": (
        lambda count, seed, kind=kind: fuzz_triage(service.url, radiologist, kind, count, seed,
                                                   args.concurrency)) for kind in TRIAGE_KINDS}
    known = known_path_values(service.url, admin)
    for label, operation in openapi_operations(service.url).items():
        entry_points[label] = (lambda count, seed, operation=operation: fuzz_operation(
            service.url, admin, operation, count, seed, args.concurrency, known=known))
    print(f"{len(entry_points)} entry points, {args.inputs} inputs each, concurrency "
          f"{args.concurrency}, seed {args.seed}", flush=True)
    server_errors = 0
    for label, campaign in entry_points.items():
        if wanted and label not in wanted:
            continue
        tally, seconds = fuzz(label, campaign, args.inputs, args.seed)
        server_errors += len(tally.server_errors)
        report(label, tally, seconds)
    print(f"answers >= 500 in all: {server_errors}; /readyz after: "
          f"{'200' if is_ready(service.url) else 'NOT READY'}", flush=True)


if __name__ == "__main__":
    main()
