"""Bearer JWTs from trusted issuers, checked as CDS Hooks services must check them.

CDS Hooks 2.0, "Trusting CDS Clients": the client signs a JWT with `iss`, `aud` (the service
URL), `exp` (at most 5 minutes ahead), `iat` and a unique `jti`. Issuers and their public keys
live in `home/security.db`; each `jti` is remembered until its token expires, so a captured
token cannot be replayed.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from clinassist.serving.security import database
from clinassist.serving.security.errors import PublicKeyError
from clinassist.serving.security.principal import Principal
from clinassist.serving.security.roles import Role, parse_role

REQUIRED_CLAIMS = ["iss", "exp", "iat", "jti"]
MAX_LIFETIME_S = 300  # CDS Hooks: exp "SHALL be no more than 5 minutes in the future"
LEEWAY_S = 30  # clock skew tolerated between the client and this service
MIN_RSA_BITS = 2048
EC_ALGORITHMS = {ec.SECP256R1.name: "ES256", ec.SECP384R1.name: "ES384"}
RSA_ALGORITHMS = ["RS256", "RS384"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS trusted_issuers (
    issuer TEXT PRIMARY KEY,
    public_key_pem TEXT NOT NULL,
    role TEXT NOT NULL,
    audience TEXT
);
CREATE TABLE IF NOT EXISTS seen_jti (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
);
"""


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    role: Role
    audience: str | None
    algorithms: list[str]


class TrustedIssuers:
    """The issuers whose signed JWTs authenticate callers, each mapped to one role."""

    def __init__(self, home: Path) -> None:
        self._db = database.Database(home / database.SECURITY_DB, SCHEMA)

    def trust_issuer(self, issuer: str, public_key_pem: str, role: str,
                     audience: str | None = None) -> TrustedIssuer:
        """Trust tokens signed by `issuer`'s key (replacing any earlier key) as `role`."""
        if not issuer:
            raise PublicKeyError("the issuer must be a non-empty string, e.g. the EHR's base URL")
        trusted = TrustedIssuer(issuer, parse_role(role), audience or None,
                                _algorithms(public_key_pem))
        with self._db.transaction() as db:
            db.execute("INSERT OR REPLACE INTO trusted_issuers VALUES (?, ?, ?, ?)",
                       (issuer, public_key_pem, trusted.role.value, trusted.audience))
        return trusted

    def authenticate_jwt(self, token: str) -> Principal | None:
        """The issuer's principal if `token` is valid, unexpired and not seen before; else None."""
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            return None
        row = self._issuer(issuer) if isinstance(issuer, str) else None
        if row is None:
            return None
        audience = row["audience"]
        try:
            claims = jwt.decode(
                token, row["public_key_pem"], algorithms=_algorithms(row["public_key_pem"]),
                issuer=issuer, audience=audience, leeway=LEEWAY_S,
                options={"require": REQUIRED_CLAIMS, "verify_aud": audience is not None})
        except jwt.PyJWTError:
            return None
        expires = int(claims["exp"])
        if expires - int(claims["iat"]) > MAX_LIFETIME_S or not self._first_use(
                issuer, claims["jti"], expires + LEEWAY_S):
            return None
        return Principal(issuer, Role(row["role"]), "jwt")

    def _issuer(self, issuer: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.query(
            "SELECT * FROM trusted_issuers WHERE issuer = ?", (issuer,)).fetchone()
        return row

    def _first_use(self, issuer: str, jti: str, forget_after: int) -> bool:
        """Remember `jti` until `forget_after`; False if it was already remembered."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM seen_jti WHERE expires < ?", (int(time.time()),))
            try:
                db.execute("INSERT INTO seen_jti VALUES (?, ?, ?)", (issuer, jti, forget_after))
            except sqlite3.IntegrityError:
                return False
        return True


def _algorithms(public_key_pem: str) -> list[str]:
    """The signature algorithms a key may verify; symmetric and "none" never qualify."""
    try:
        key = load_pem_public_key(public_key_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as error:
        raise PublicKeyError(f"not a PEM public key ({error}); export it with "
                             "`openssl pkey -pubout`") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in EC_ALGORITHMS:
        return [EC_ALGORITHMS[key.curve.name]]
    raise PublicKeyError("unsupported key: use RSA of at least 2048 bits (RS256/RS384) or "
                         "EC P-256/P-384 (ES256/ES384)")
