"""`clinassist dataset export` and `clinassist monitor report`: learning from the site's studies."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

from clinassist.config import home_dir
from clinassist.errors import ClinassistError


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; give YYYY-MM-DD") from None


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `dataset` and `monitor` commands to a CLI's subparsers."""
    dataset = subparsers.add_parser("dataset", help="site datasets from radiologists' feedback")
    commands = dataset.add_subparsers(dest="dataset_command", required=True)
    export = commands.add_parser(
        "export", help="the studies with feedback, de-identified, as images + manifest.csv + "
                       "SHA256SUMS + a data card")
    export.add_argument("--since", type=iso_date, required=True,
                        help="readings received on or after this date (YYYY-MM-DD, UTC)")
    export.add_argument("--instances", type=Path, required=True,
                        help="folder holding the original instances (e.g. a PACS export), "
                             "matched by SOP Instance UID")
    export.add_argument("output", type=Path, help="a new folder for the dataset")
    export.set_defaults(func=cmd_dataset_export)

    monitor = subparsers.add_parser("monitor", help="drift and agreement of the triage model")
    monitor_commands = monitor.add_subparsers(dest="monitor_command", required=True)
    reference = monitor_commands.add_parser(
        "reference", help="run the cxr bundle on its validation images and write "
                          "monitoring_reference.json beside it")
    reference.add_argument("--bundle", type=Path, help="bundle folder (default: the committed "
                                                       "cxr_pneumonia)")
    reference.add_argument("--limit", type=int, help="images per population (smoke runs)")
    reference.set_defaults(func=cmd_monitor_reference)
    report = monitor_commands.add_parser(
        "report", help="a report with plots of scores, flags, QC rejections, drift and "
                       "agreement; exits 1 when drift or falling agreement crosses its threshold")
    report.add_argument("--since", type=iso_date, required=True,
                        help="triages and readings on or after this date (YYYY-MM-DD, UTC)")
    report.add_argument("--output", type=Path, default=Path("monitoring"),
                        help="folder for the report and its plots (default: ./monitoring)")
    report.add_argument("--reference", type=Path,
                        help="monitoring_reference.json (default: beside the cxr bundle)")
    report.set_defaults(func=cmd_monitor_report)


def cmd_dataset_export(args: argparse.Namespace) -> int:
    from clinassist.serving.deid import Deidentifier
    from clinassist.serving.imaging.dataset_export import CARD, export_dataset
    from clinassist.serving.security.site_key import load_site_key

    home = home_dir()
    summary = export_dataset(home, args.since, args.output, args.instances,
                             Deidentifier(load_site_key(home)))
    left_out = ", ".join(f"{reason}: {n}" for reason, n in sorted(summary.left_out.items()))
    print(f"wrote {len(summary.rows)} image(s) to {args.output}; left out: {left_out or 'none'}; "
          f"see {args.output / CARD}")
    return 0


def cmd_monitor_reference(args: argparse.Namespace) -> int:
    import json

    from clinassist.training.monitoring_reference import write_reference

    path = write_reference(args.bundle, args.limit)
    populations = json.loads(path.read_text())["populations"]
    print(f"wrote {path}: " + "; ".join(
        f"{name} {p['images']} images, flag rate {p['flag_rate']:.3f}"
        for name, p in populations.items()))
    return 0


def cmd_monitor_report(args: argparse.Namespace) -> int:
    from clinassist.serving.imaging.monitoring import Reference
    from clinassist.serving.imaging.monitoring_report import write_report

    if args.reference is not None and not args.reference.is_file():
        raise ClinassistError(f"{args.reference} does not exist; write one with "
                              "`clinassist monitor reference`")
    report = write_report(home_dir(), args.since, args.output, Reference.load(args.reference))
    for line in report.lines:
        print(line)
    print(f"report: {report.files[0]}")
    return 1 if report.alerts else 0
