"""Bearer JWTs from trusted issuers, checked as CDS Hooks services must check them.

CDS Hooks 2.0, "Trusting CDS Clients": the client signs a JWT with `iss`, `aud` (the service
URL), `exp` (at most 5 minutes ahead), `iat` and a unique `jti`. Issuers and their public keys
live in the security store; each `jti` is remembered until its token expires, so a captured
token cannot be replayed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from sqlalchemy import Column, Integer, MetaData, Row, Table, Text, delete, select
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from clinassist.serving.security.errors import PublicKeyError
from clinassist.serving.security.principal import Principal
from clinassist.serving.security.roles import Role, parse_role
from clinassist.serving.security.users import SECURITY
from clinassist.serving.storage import Store
from clinassist.serving.storage.sql import insert

REQUIRED_CLAIMS = ["iss", "exp", "iat", "jti"]
MAX_LIFETIME_S = 300  # CDS Hooks: exp "SHALL be no more than 5 minutes in the future"
LEEWAY_S = 30  # clock skew tolerated between the client and this service
MIN_RSA_BITS = 2048
EC_ALGORITHMS = {ec.SECP256R1.name: "ES256", ec.SECP384R1.name: "ES384"}
RSA_ALGORITHMS = ["RS256", "RS384"]

TABLES = MetaData()
trusted_issuers = Table("trusted_issuers", TABLES, Column("issuer", Text, primary_key=True),
                        Column("public_key_pem", Text), Column("role", Text),
                        Column("audience", Text))
seen_jti = Table("seen_jti", TABLES, Column("issuer", Text, primary_key=True),
                 Column("jti", Text, primary_key=True), Column("expires", Integer))


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    role: Role
    audience: str | None
    algorithms: list[str]


class TrustedIssuers:
    """The issuers whose signed JWTs authenticate callers, each mapped to one role."""

    def __init__(self, home: Path) -> None:
        self._db = Store(home, SECURITY)

    def trust_issuer(self, issuer: str, public_key_pem: str, role: str,
                     audience: str | None = None) -> TrustedIssuer:
        """Trust tokens signed by `issuer`'s key (replacing any earlier key) as `role`."""
        if not issuer:
            raise PublicKeyError("the issuer must be a non-empty string, e.g. the EHR's base URL")
        trusted = TrustedIssuer(issuer, parse_role(role), audience or None,
                                _algorithms(public_key_pem))
        values = {"public_key_pem": public_key_pem, "role": trusted.role.value,
                  "audience": trusted.audience}
        with self._db.write() as db:
            db.execute(insert(db, trusted_issuers).values(issuer=issuer, **values)
                       .on_conflict_do_update(index_elements=["issuer"], set_=values))
        return trusted

    def authenticate_jwt(self, token: str) -> Principal | None:
        """The issuer's principal if `token` is valid, unexpired and not seen before; else None."""
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            return None
        row = self._issuer(issuer) if isinstance(issuer, str) else None
        if row is None or not isinstance(issuer, str):
            return None
        audience = row.audience
        try:
            claims = jwt.decode(
                token, row.public_key_pem, algorithms=_algorithms(row.public_key_pem),
                issuer=issuer, audience=audience, leeway=LEEWAY_S,
                options={"require": REQUIRED_CLAIMS, "verify_aud": audience is not None})
        except jwt.PyJWTError:
            return None
        expires = int(claims["exp"])
        if expires - int(claims["iat"]) > MAX_LIFETIME_S or not self._first_use(
                issuer, claims["jti"], expires + LEEWAY_S):
            return None
        return Principal(issuer, Role(row.role), "jwt")

    def _issuer(self, issuer: str) -> Row | None:
        with self._db.read() as db:
            return db.execute(select(trusted_issuers).where(
                trusted_issuers.c.issuer == issuer)).first()

    def _first_use(self, issuer: str, jti: str, forget_after: int) -> bool:
        """Remember `jti` until `forget_after`; False if it was already remembered."""
        with self._db.write() as db:
            db.execute(delete(seen_jti).where(seen_jti.c.expires < int(time.time())))
            added = db.execute(insert(db, seen_jti).values(
                issuer=issuer, jti=jti, expires=forget_after).on_conflict_do_nothing()
                .returning(seen_jti.c.jti)).first()
        return added is not None


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
