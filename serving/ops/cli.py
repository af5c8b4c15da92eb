"""`clinassist backup DEST` and `clinassist restore SRC`: the home's state, copied and put back.

Both are audited with the operating system user as the actor: a backup in the trail it copied
from, a restore in the trail it brought back.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clinassist.config import home_dir
from clinassist.serving.ops.in_use import describe
from clinassist.serving.security.audit import AuditTrail
from clinassist.serving.security.cli import _operator
from clinassist.serving.security.roles import Role


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `backup` and `restore` commands to a CLI's subparsers."""
    backup = subparsers.add_parser(
        "backup", help="copy CLINASSIST_HOME consistently, services running or not")
    backup.add_argument("destination", type=Path, metavar="DEST", help="a new folder")
    backup.set_defaults(func=cmd_backup)

    put_back = subparsers.add_parser(
        "restore", help="put a backup back as CLINASSIST_HOME, after checking it")
    put_back.add_argument("source", type=Path, metavar="SRC", help="a folder `backup` wrote")
    put_back.add_argument("--force", action="store_true",
                          help="replace the home even though running processes hold it")
    put_back.set_defaults(func=cmd_restore)


def cmd_backup(args: argparse.Namespace) -> int:
    from clinassist.serving.ops.backup import back_up  # the store modules it reads are heavy

    home = home_dir()
    report = back_up(home, args.destination)
    manifest, audit = report.manifest, report.manifest.audit
    print(f"backed up {len(manifest.files)} files ({manifest.size / 1e6:.1f} MB) from {home} to "
          f"{report.destination} in {report.seconds:.1f} s")
    if audit is not None:
        AuditTrail(home).record(_operator(), Role.ADMIN, "home:backup", str(report.destination),
                                "success", detail=f"{len(manifest.files)} files")
        if not audit.intact:
            print(f"warning: the audit trail is broken at {audit.reason}; the backup keeps it "
                  "as evidence, but `clinassist restore` will refuse it")
            return 1
        print(f"audit trail intact: {audit.rows} rows, head hash {audit.head_hash}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from clinassist.serving.ops.restore import restore

    report = restore(args.source, home_dir(), force=args.force)
    print(f"restored {len(report.manifest.files)} files ({report.manifest.size / 1e6:.1f} MB) "
          f"taken {report.manifest.created} into {report.home} in {report.seconds:.1f} s")
    if report.audit is not None:
        print(f"audit trail intact: {report.audit.rows} rows, head hash {report.audit.head_hash}")
    AuditTrail(report.home).record(_operator(), Role.ADMIN, "home:restore", str(args.source),
                                   "success", detail=f"backup taken {report.manifest.created}")
    if report.previous is not None:
        print(f"the home it replaced is kept at {report.previous}")
    if report.holders:
        print(f"warning: {describe(report.holders)} still hold files of the replaced home: "
              "restart them now")
    return 0
