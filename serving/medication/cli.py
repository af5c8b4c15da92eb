"""`clinassist kb build`: write the medication knowledge base."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from clinassist.config import data_dir
from clinassist.errors import ClinassistError
from clinassist.serving.medication import kb, kb_build


def cmd_kb_build(args: argparse.Namespace) -> None:
    source = data_dir()
    if not source.is_dir():
        raise ClinassistError(f"no data folder {source}; set CLINASSIST_DATA to the folder "
                              "holding ddi_ansm_thesaurus/, vocab_drug_names/, vocab_atc_who/")
    output = args.output or kb.default_path()
    meta = kb_build.build(source, output, with_ddinter=args.with_ddinter,
                          with_atc=not args.without_atc)
    licence = ("commercial use allowed" if meta["commercial_use"] == "true"
               else "includes NON-COMMERCIAL sources")
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB) in {meta['build_seconds']} s\n"
          f"version {meta['kb_version']}\nsources {', '.join(meta['sources'])} ({licence})")


def cmd_review(args: argparse.Namespace) -> int:
    """Review every patient of a CSV or FHIR batch with a progress bar, then print a table."""
    from tqdm import tqdm

    from clinassist.serving.medication.batch import read_cases, review_case, summary_table
    from clinassist.serving.medication.review import default_review

    cases = read_cases(args.file)
    review = default_review()
    results = [review_case(review, case) for case in tqdm(cases, desc="patients", unit="patient")]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(summary_table(results))
    failed = sum("error" in result for result in results)
    print(f"\n{len(results) - failed} of {len(results)} patients reviewed; "
          f"knowledge base {review.kb.version}")
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `kb` and `medication` commands to a CLI's subparsers."""
    medication = subparsers.add_parser("medication", help="medication review for pharmacists")
    medication_commands = medication.add_subparsers(dest="medication_command", required=True)
    review = medication_commands.add_parser(
        "review", help="review many patients at once (CSV rows, or FHIR Bundle files)")
    review.add_argument("file", type=Path, help=".csv file, Bundle .json file, or a folder of them")
    review.add_argument("--json", type=Path, help="also write every full review to this file")
    review.set_defaults(func=cmd_review)

    kb_parser = subparsers.add_parser("kb", help="the medication knowledge base")
    commands = kb_parser.add_subparsers(dest="kb_command", required=True)
    build = commands.add_parser("build", help="build the SQLite KB from $CLINASSIST_DATA")
    build.add_argument("--with-ddinter", action="store_true",
                       help="add DDInter (CC BY-NC-SA 4.0: NON-COMMERCIAL use only)")
    build.add_argument("--without-atc", action="store_true",
                       help="leave out the WHO ATC index (non-commercial): a commercially clean "
                            "KB, without ATC codes and ATC-class checks")
    build.add_argument("--output", type=Path,
                       help="default $CLINASSIST_HOME/kb.sqlite")
    build.set_defaults(func=cmd_kb_build)
