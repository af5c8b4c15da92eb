"""`clinassist dataset export` and `clinassist monitor report`: learning from the site's studies."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

from clinassist.config import home_dir


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; give YYYY-MM-DD") from None


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `dataset` command to a CLI's subparsers."""
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
