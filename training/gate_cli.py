"""`clinassist gate cxr --candidate RUN_OR_BUNDLE [--site DIR...]`: the promotion gate.

A training run is first exported to a bundle (`--bundle DIR`, else a folder beside the run,
`RUN/bundle-VERSION`), which is registered as a candidate. The gate then compares it with the
registry's production version (see `cxr_gate`), writes `gate.json` beside the candidate (in the
bundle, and in the run when it was one) and records the decision in the registry, bound to the
model file's SHA-256, where `clinassist models promote VERSION` checks it. Exits 0 when it
passed, 1 when it did not.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
from pathlib import Path
from typing import Any

from clinassist.config import home_dir
from clinassist.errors import ClinassistError

SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    gate = subparsers.add_parser(
        "gate", help="may a candidate replace the production model? (paired tests on the "
                     "site's held-out patients and the public test splits)")
    targets = gate.add_subparsers(dest="model", required=True)
    cxr = targets.add_parser("cxr", help="gate a chest-radiograph run or bundle")
    cxr.add_argument("--candidate", type=Path, required=True,
                     help="a training run (`train cxr --output`) or a bundle folder")
    cxr.add_argument("--site", type=Path, nargs="+", default=[], metavar="DIR",
                     help="site datasets (`dataset export`); their held-out patients are used")
    cxr.add_argument("--bundle", type=Path, help="where to export a run (default: RUN/bundle-V)")
    cxr.add_argument("--version", help="the exported run's version (default: production's "
                                       "next patch version)")
    cxr.add_argument("--limit", type=int,
                     help="public test images per population (smoke runs; the report says so)")
    cxr.add_argument("--json", action="store_true", help="print gate.json")
    cxr.set_defaults(func=cmd_gate_cxr)


def next_version(production: str, taken: set[str]) -> str:
    match = SEMVER.fullmatch(production)
    if match is None:
        raise ClinassistError(f"production version {production!r} is not MAJOR.MINOR.PATCH; "
                              "give the candidate's --version")
    major, minor, patch = (int(part) for part in match.groups())
    patch += 1
    while f"{major}.{minor}.{patch}" in taken:
        patch += 1
    return f"{major}.{minor}.{patch}"


def candidate_bundle(args: argparse.Namespace, production_version: str,
                     taken: set[str]) -> Path:
    """The candidate's bundle folder: the given bundle, or the run exported."""
    if (args.candidate / "metadata.json").is_file():
        return args.candidate
    if not (args.candidate / "final" / "config.yaml").is_file():
        raise ClinassistError(f"{args.candidate} is neither a training run (final/config.yaml) "
                              "nor a bundle (metadata.json)")
    from clinassist.training.cxr_export import export

    version = args.version or next_version(production_version, taken)
    folder = args.bundle or args.candidate / f"bundle-{version}"
    export([args.candidate], folder, version)
    return folder


def cmd_gate_cxr(args: argparse.Namespace) -> int:
    from clinassist.bundle import Bundle
    from clinassist.serving.imaging.model_registry import ModelRegistry, production_dir
    from clinassist.serving.imaging.site_calibration import ModelIdentity, SiteCalibrationStore
    from clinassist.training.cxr_gate import format_report, run_gate

    home = home_dir()
    registry = ModelRegistry(home)
    production = Bundle.load(production_dir(home))
    folder = candidate_bundle(args, production.version, {v.version for v in registry.versions()})
    candidate = Bundle.load(folder)
    if candidate.metadata["sha256"] == production.metadata["sha256"]:
        raise ClinassistError(f"{folder} is the production model itself; nothing to gate")
    registry.register(folder, f"cli:{getpass.getuser()}")  # refuses a clashing version first
    overlay = SiteCalibrationStore(home, production.name).active(
        ModelIdentity.of(production.metadata))
    report = run_gate(candidate, production, overlay, args.site, args.limit)
    written = [report.write(folder)]
    if folder != args.candidate:  # a run: the decision is written beside it too
        written.append(report.write(args.candidate))
    registry.record_gate(candidate.version, report.as_json())
    print(json.dumps(report.as_json(), indent=2) if args.json else format_report(report))
    print(f"wrote {', '.join(map(str, written))}; {candidate.name} {candidate.version} is a "
          "registered candidate" + (f": promote it with `clinassist models promote "
                                    f"{candidate.version}`" if report.passed else ""))
    return 0 if report.passed else 1
