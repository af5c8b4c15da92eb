"""`clinassist deid IN OUT`: de-identify DICOM files (PS3.15 Annex E) with the site key."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clinassist.config import home_dir


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `deid` command to a CLI's subparsers."""
    deid = subparsers.add_parser(
        "deid", help="de-identify DICOM files: PS3.15 basic profile, modified dates, clean "
                     "descriptors; pseudonyms and UIDs keyed by the site key")
    deid.add_argument("source", type=Path, help="a DICOM file or a folder of them")
    deid.add_argument("output", type=Path, help="folder for the de-identified files and "
                                                "deid_report.csv")
    deid.add_argument("--clean-pixels", metavar="LEFT,TOP,RIGHT,BOTTOM", action="append",
                      default=[], help="blank this pixel region of instances that declare "
                                       "burned-in annotation (repeat for several); without it "
                                       "they are refused")
    deid.set_defaults(func=cmd_deid)


def cmd_deid(args: argparse.Namespace) -> int:
    from clinassist.serving.deid.deidentify import Deidentifier, Region
    from clinassist.serving.deid.files import REPORT_FILE, deidentify_files, dicom_files
    from clinassist.serving.security.site_key import load_site_key

    deidentifier = Deidentifier(load_site_key(home_dir()),
                                clean_regions=[Region.parse(r) for r in args.clean_pixels])
    run = deidentify_files(dicom_files(args.source), args.output, deidentifier)
    actions = ", ".join(f"{action} {count}" for action, count in sorted(run.counts.items()))
    print(f"de-identified {len(run.written)} instance(s) into {args.output}; attributes per "
          f"action: {actions or 'none'}; report: {args.output / REPORT_FILE}; "
          f"{len(run.skipped)} file(s) skipped as not DICOM")
    for source, reason in run.refused:
        print(f"refused {source}: {reason}")
    return 1 if run.refused else 0
