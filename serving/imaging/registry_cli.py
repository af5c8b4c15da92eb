"""`clinassist models list | register | promote | rollback`: the triage model's registry.

Who may change it from the command line. Like `users add` and `calibrate site`, these commands
trust the operating system: whoever can write CLINASSIST_HOME (the service account) holds
`models:manage`, and is audited as `cli:<os user>` with the `ml_engineer` role. Promoting past a
failed or missing gate (`--override`) takes more: the API key of an active `admin` user in the
environment variable CLINASSIST_API_KEY (never on the command line, where other users could read
it), and the audit row names that admin. A refused override is audited too.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path
from typing import Any

from clinassist.config import home_dir
from clinassist.serving.imaging.model_registry import (MODEL, Change, ModelRegistry,
                                                       RegistryError, production_dir)
from clinassist.serving.security import AuditTrail
from clinassist.serving.security.roles import Permission, Role
from clinassist.serving.security.users import UserStore

ADMIN_KEY_ENV = "CLINASSIST_API_KEY"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `models` command to a CLI's subparsers."""
    models = subparsers.add_parser(
        "models", help="the triage model's registry: versions, stages, promotion, rollback")
    commands = models.add_subparsers(dest="models_command", required=True)
    listing = commands.add_parser("list", help="versions with their stage and gate")
    listing.add_argument("--json", action="store_true", help="print the versions as JSON")
    listing.set_defaults(func=cmd_list)
    add = commands.add_parser("register", help="add a bundle folder as a candidate")
    add.add_argument("bundle", type=Path)
    add.set_defaults(func=cmd_register)
    promote = commands.add_parser(
        "promote", help="serve VERSION (its gate must have passed; the current one is archived)")
    promote.add_argument("version")
    promote.add_argument("--reason", default="promoted", help="recorded in the registry and audit")
    promote.add_argument("--override", action="store_true",
                         help=f"promote without a passed gate: needs an admin's API key in "
                              f"{ADMIN_KEY_ENV}")
    promote.set_defaults(func=cmd_promote)
    rollback = commands.add_parser(
        "rollback", help="serve again the version the current production replaced")
    rollback.add_argument("--reason", default="rolled back",
                          help="recorded in the registry and audit")
    rollback.set_defaults(func=cmd_rollback)


def operator() -> str:
    return f"cli:{getpass.getuser()}"


def audit(actor: str, role: Role, version: str, outcome: int | str, detail: str) -> None:
    AuditTrail(home_dir()).record(actor, role, Permission.MODELS_MANAGE,
                                  f"models/{MODEL}/{version}", outcome, detail=detail)


def cmd_list(args: argparse.Namespace) -> int:
    registry = ModelRegistry(home_dir())
    versions = registry.versions()
    if args.json:
        print(json.dumps([v.as_json() for v in versions], indent=2))
        return 0
    if not versions:
        print(f"the registry is empty: the committed bundle {production_dir(home_dir())} is "
              "production")
        return 0
    rows = [("VERSION", "STAGE", "GATE", "SINCE", "SHA256")] + [
        (v.version, v.stage.value,
         "none" if v.gate is None else ("passed" if v.gate.passed else "failed"),
         v.stage_changed[:19], v.sha256[:12]) for v in versions]
    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    registered = ModelRegistry(home_dir()).register(args.bundle, operator())
    audit(operator(), Role.ML_ENGINEER, registered.version, "success",
          f"registered as {registered.stage.value} from {args.bundle}")
    print(f"{MODEL} {registered.version} is registered ({registered.stage.value})")
    return 0


def admin_override(version: str) -> str:
    """The admin whose API key authorises an override, or a refusal (audited)."""
    key = os.environ.get(ADMIN_KEY_ENV, "")
    principal = UserStore(home_dir()).authenticate_key(key) if key else None
    if principal is None or principal.role != Role.ADMIN:
        audit(operator(), Role.ML_ENGINEER, version, 403,
              "override refused: no admin API key in " + ADMIN_KEY_ENV)
        raise RegistryError(f"--override needs the admin role: put the API key of an active "
                            f"admin user in {ADMIN_KEY_ENV} (`clinassist users add --role admin` "
                            "creates one)")
    return principal.name


def cmd_promote(args: argparse.Namespace) -> int:
    registry = ModelRegistry(home_dir())
    actor, role = operator(), Role.ML_ENGINEER
    if args.override:
        actor, role = f"{admin_override(args.version)} (via {operator()})", Role.ADMIN
    try:
        change = registry.promote(args.version, actor, args.reason, override=args.override)
    except RegistryError as refused:
        audit(actor, role, args.version, 409, f"promotion refused: {refused}")
        raise
    audit(actor, role, args.version, "success",
          f"promoted{' with override' if args.override else ''}: {args.reason}; "
          f"{describe(change)}")
    print(f"{describe(change)}; the services serve it from their next request")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    change = ModelRegistry(home_dir()).rollback(operator(), args.reason)
    audit(operator(), Role.ML_ENGINEER, change.production.version, "success",
          f"rolled back: {args.reason}; {describe(change)}")
    print(f"{describe(change)}; the services serve it from their next request")
    return 0


def describe(change: Change) -> str:
    before = change.previous.version if change.previous else "none"
    return f"{MODEL} {change.production.version} is production (was {before})"
