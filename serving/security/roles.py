"""Roles, permissions and the table that joins them; anything not in the table is denied."""

from __future__ import annotations

import difflib
from enum import StrEnum
from typing import TypeVar

from clinassist.serving.security.errors import SecurityError, UnknownPermissionError, UnknownRoleError


class Permission(StrEnum):
    IMAGING_TRIAGE = "imaging:triage"  # submit DICOM images for triage
    IMAGING_RESULTS = "imaging:results"  # read triage result objects
    IMAGING_FEEDBACK = "imaging:feedback"  # record a radiologist's reading of a triaged study
    WORKLIST_READ = "worklist:read"
    MEDICATION_REVIEW = "medication:review"
    CDS_INVOKE = "cds:invoke"  # call a CDS Hooks service
    CDS_FEEDBACK = "cds:feedback"  # send CDS Hooks feedback on a card
    MODELS_READ = "models:read"
    MODELS_MANAGE = "models:manage"  # change what a model decides with (site calibration, ...)
    AUDIT_READ = "audit:read"
    USERS_MANAGE = "users:manage"
    GATEWAY_ADMIN = "gateway:admin"


class Role(StrEnum):
    RADIOLOGIST = "radiologist"
    PHARMACIST = "pharmacist"
    ML_ENGINEER = "ml_engineer"
    ADMIN = "admin"
    GATEWAY = "gateway"  # a service account, e.g. the DICOM gateway forwarding studies from PACS


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.RADIOLOGIST: frozenset({Permission.IMAGING_TRIAGE, Permission.IMAGING_RESULTS,
                                 Permission.IMAGING_FEEDBACK, Permission.WORKLIST_READ}),
    Role.PHARMACIST: frozenset({Permission.MEDICATION_REVIEW, Permission.CDS_INVOKE,
                                Permission.CDS_FEEDBACK}),
    Role.ML_ENGINEER: frozenset({Permission.MODELS_READ, Permission.MODELS_MANAGE,
                                 Permission.IMAGING_RESULTS}),
    Role.ADMIN: frozenset(Permission),
    Role.GATEWAY: frozenset({Permission.IMAGING_TRIAGE, Permission.IMAGING_RESULTS,
                             Permission.WORKLIST_READ}),
}


def is_allowed(role: str, permission: str) -> bool:
    """Whether `role` holds `permission`; False for any unknown role or permission."""
    return role in ROLE_PERMISSIONS and permission in ROLE_PERMISSIONS[Role(role)]


def parse_role(name: str) -> Role:
    """The role called `name`, or an error naming the valid roles and the nearest one."""
    return _parse(Role, name, UnknownRoleError)


def parse_permission(name: str) -> Permission:
    """The permission called `name`, or an error naming the valid ones and the nearest one."""
    return _parse(Permission, name, UnknownPermissionError)


E = TypeVar("E", bound=StrEnum)


def _parse(kind: type[E], name: str, error: type[SecurityError]) -> E:
    try:
        return kind(name)
    except ValueError:
        valid = [member.value for member in kind]
        nearest = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
        raise error(f"unknown {kind.__name__.lower()} {name!r}{hint}; "
                    f"choose one of: {', '.join(valid)}") from None


def permissions_markdown() -> str:
    """The role table as a Markdown table: one row per permission, one column per role."""
    lines = ["| Permission | " + " | ".join(f"`{role}`" for role in Role) + " |",
             "|---|" + "---|" * len(Role)]
    for permission in Permission:
        cells = ("✓" if permission in ROLE_PERMISSIONS[role] else "" for role in Role)
        lines.append(f"| `{permission}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
