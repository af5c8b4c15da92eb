"""The one authentication, authorisation and audit layer every clinassist endpoint goes through.

Callers authenticate with `Authorization: Bearer <token>`: an API key from `UserStore`, or a JWT
signed by an issuer registered in `TrustedIssuers`. `AuthAuditMiddleware` maps each request to
a permission, checks it against the caller's role (`ROLE_PERMISSIONS`, default deny) and
appends one row per request to the hash-chained `AuditTrail`, with patients pseudonymised.
"""

from clinassist.serving.security.audit import AuditRecord, AuditTrail, VerifyResult
from clinassist.serving.security.errors import SecurityError
from clinassist.serving.security.fhir import collection_bundle
from clinassist.serving.security.jwt import TrustedIssuer, TrustedIssuers
from clinassist.serving.security.middleware import DEFAULT_OPEN_PATHS, AuthAuditMiddleware, Route
from clinassist.serving.security.principal import Principal
from clinassist.serving.security.roles import (
    ROLE_PERMISSIONS,
    Permission,
    Role,
    is_allowed,
    parse_role,
    permissions_markdown,
)
from clinassist.serving.security.site_key import load_site_key, pseudonymise
from clinassist.serving.security.users import User, UserStore

__all__ = [
    "DEFAULT_OPEN_PATHS", "ROLE_PERMISSIONS", "AuditRecord", "AuditTrail", "AuthAuditMiddleware",
    "Permission", "Principal", "Role", "Route", "SecurityError", "TrustedIssuer",
    "TrustedIssuers", "User", "UserStore", "VerifyResult", "collection_bundle", "is_allowed",
    "load_site_key", "parse_role", "permissions_markdown", "pseudonymise",
]
