"""`clinassist users` and `clinassist audit`: API keys, trusted JWT issuers, the audit trail.

Changes to users and issuers, and audit exports, are themselves audited, with the operating
system user as the actor.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clinassist.config import home_dir
from clinassist.serving.security.audit import AuditTrail
from clinassist.serving.security.errors import PublicKeyError
from clinassist.serving.security.fhir import collection_bundle
from clinassist.serving.security.jwt import TrustedIssuers
from clinassist.serving.security.roles import Permission, Role
from clinassist.serving.security.users import UserStore

ROLES = ", ".join(Role)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `users` and `audit` commands to a CLI's subparsers."""
    users = subparsers.add_parser("users", help="manage API users and trusted JWT issuers")
    users_commands = users.add_subparsers(dest="users_command", required=True)

    add = users_commands.add_parser("add", help="create a user and print its API key once")
    add.add_argument("--name", required=True, help="unique, never reused")
    add.add_argument("--role", required=True, help=ROLES)
    add.set_defaults(func=cmd_users_add)

    listing = users_commands.add_parser("list", help="list users (name, role, created, revoked)")
    listing.set_defaults(func=cmd_users_list)

    revoke = users_commands.add_parser("revoke", help="revoke a user's API key for good")
    revoke.add_argument("--name", required=True)
    revoke.set_defaults(func=cmd_users_revoke)

    trust = users_commands.add_parser("trust-issuer",
                                      help="accept JWTs signed by an issuer (CDS Hooks clients)")
    trust.add_argument("--issuer", required=True, help="the tokens' `iss` claim")
    trust.add_argument("--public-key", required=True, type=Path, help="PEM public key file")
    trust.add_argument("--role", required=True, help=ROLES)
    trust.add_argument("--audience", help="required `aud` claim, e.g. this service's URL")
    trust.set_defaults(func=cmd_users_trust_issuer)

    audit = subparsers.add_parser("audit", help="check and export the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)

    verify = audit_commands.add_parser("verify", help="check the audit trail's hash chain")
    verify.set_defaults(func=cmd_audit_verify)

    export = audit_commands.add_parser("export",
                                       help="write the trail as a FHIR Bundle of AuditEvents")
    export.add_argument("--output", type=Path, help="JSON file to write (default: stdout)")
    export.add_argument("--since", type=_timestamp,
                        help="ISO 8601 time; events from then on (UTC if no offset is given)")
    export.set_defaults(func=cmd_audit_export)


def cmd_users_add(args: argparse.Namespace) -> int:
    user, key = UserStore(home_dir()).add(args.name, args.role)
    _audit_operator(f"users/{user.name}", f"added with role {user.role}")
    print(f"created user {user.name} with role {user.role}; API key:")
    print(key)
    print("warning: this key is shown once and is not stored; keep it somewhere safe",
          file=sys.stderr)
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "ROLE", "CREATED", "REVOKED")] + [
        (user.name, user.role, _when(user.created), _when(user.revoked))
        for user in UserStore(home_dir()).list()]
    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def cmd_users_revoke(args: argparse.Namespace) -> int:
    user = UserStore(home_dir()).revoke(args.name)
    _audit_operator(f"users/{user.name}", "revoked")
    print(f"revoked user {user.name} ({_when(user.revoked)})")
    return 0


def cmd_users_trust_issuer(args: argparse.Namespace) -> int:
    try:
        pem = args.public_key.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise PublicKeyError(f"cannot read public key {args.public_key}: {error}") from None
    issuer = TrustedIssuers(home_dir()).trust_issuer(args.issuer, pem, args.role, args.audience)
    _audit_operator(f"issuers/{issuer.issuer}", f"trusted with role {issuer.role}")
    print(f"trusted issuer {issuer.issuer} with role {issuer.role} "
          f"({'/'.join(issuer.algorithms)}, audience {issuer.audience or 'not checked'})")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    result = AuditTrail(home_dir()).verify()
    if not result.ok:
        print(f"audit trail BROKEN at row {result.first_broken_id}: {result.reason}")
        return 1
    print(f"audit trail intact: {result.rows} rows")
    print(f"head hash: {result.head_hash} (keep a copy elsewhere to detect truncation)")
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    trail = AuditTrail(home_dir())
    events = trail.export_fhir(args.since)
    text = json.dumps(collection_bundle(events), indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {len(events)} AuditEvents to {args.output}", file=sys.stderr)
    trail.record(_operator(), Role.ADMIN, Permission.AUDIT_READ, "audit", "success",
                 detail=f"exported {len(events)} events")
    return 0


def _audit_operator(resource: str, detail: str) -> None:
    AuditTrail(home_dir()).record(_operator(), Role.ADMIN, Permission.USERS_MANAGE, resource,
                                  "success", detail=detail)


def _operator() -> str:
    return f"cli:{getpass.getuser()}"


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, e.g. 2025-01-31 or 2025-01-31T08:00:00+08:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"
