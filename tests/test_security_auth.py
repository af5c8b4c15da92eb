"""Roles, the site key, API-key users and JWTs from trusted issuers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from clinassist.serving.security import (
    ROLE_PERMISSIONS,
    Permission,
    Principal,
    Role,
    TrustedIssuers,
    UserStore,
    is_allowed,
    load_site_key,
    parse_role,
    permissions_markdown,
    pseudonymise,
)
from store_sql import raw
from clinassist.serving.security.errors import (
    InvalidUserNameError,
    PublicKeyError,
    SiteKeyError,
    UnknownRoleError,
    UnknownUserError,
    UserExistsError,
)

ISSUER = "https://ehr.example.org"
AUDIENCE = "https://clinassist.example.org/cds-services/medication-risk"


# Roles


def test_each_role_holds_exactly_its_listed_permissions():
    assert ROLE_PERMISSIONS[Role.RADIOLOGIST] == {"imaging:triage", "imaging:results",
                                                  "imaging:feedback", "worklist:read"}
    assert ROLE_PERMISSIONS[Role.PHARMACIST] == {"medication:review", "cds:invoke",
                                                 "cds:feedback"}
    assert ROLE_PERMISSIONS[Role.ML_ENGINEER] == {"models:read", "models:manage", "imaging:results"}
    assert ROLE_PERMISSIONS[Role.GATEWAY] == {"imaging:triage", "imaging:results",
                                              "worklist:read"}
    assert ROLE_PERMISSIONS[Role.ADMIN] == set(Permission)


def test_is_allowed_follows_the_table():
    assert is_allowed("radiologist", "imaging:triage")
    assert is_allowed("pharmacist", "cds:feedback")
    assert not is_allowed("radiologist", "medication:review")
    assert not is_allowed("gateway", "users:manage")
    assert not is_allowed("ml_engineer", "imaging:triage")


@pytest.mark.parametrize("role, permission", [
    ("nurse", "imaging:triage"), ("radiologist", "imaging:delete"), ("Admin", "audit:read"),
    ("admin", "AUDIT:READ"), ("", ""),
])
def test_unknown_roles_and_permissions_are_denied(role, permission):
    assert not is_allowed(role, permission)


def test_unknown_role_error_lists_roles_and_suggests_the_nearest():
    with pytest.raises(UnknownRoleError, match="did you mean 'radiologist'.*pharmacist"):
        parse_role("radiolgist")


def test_markdown_table_has_one_row_per_permission_and_marks_grants():
    lines = permissions_markdown().splitlines()
    assert lines[0] == ("| Permission | `radiologist` | `pharmacist` | `ml_engineer` | `admin` "
                        "| `gateway` |")
    assert len(lines) == 2 + len(Permission)
    assert "| `models:read` |  |  | ✓ | ✓ |  |" in lines


# Site key and pseudonyms


def test_site_key_is_created_once_with_mode_0600(tmp_path):
    key = load_site_key(tmp_path / "home")
    assert len(key) == 32
    assert stat.S_IMODE((tmp_path / "home" / "site.key").stat().st_mode) == 0o600
    assert load_site_key(tmp_path / "home") == key


def test_site_key_readable_by_others_is_refused(tmp_path):
    load_site_key(tmp_path)
    (tmp_path / "site.key").chmod(0o644)
    with pytest.raises(SiteKeyError, match="chmod 600"):
        load_site_key(tmp_path)


def test_pseudonym_is_a_stable_keyed_hmac():
    key = b"k" * 32
    pseudonym = pseudonymise("MRN-0042", key)
    expected = hmac.new(key, b"MRN-0042", hashlib.sha256).hexdigest()[:16]
    assert pseudonym == "pid-" + expected
    assert pseudonymise("MRN-0042", key) == pseudonym
    assert pseudonymise("MRN-0042", b"x" * 32) != pseudonym
    assert pseudonymise("MRN-0043", key) != pseudonym


# API-key users


def test_api_key_is_returned_once_and_only_its_hash_is_stored(tmp_path, database):
    store = UserStore(tmp_path)
    user, key = store.add("alice", "radiologist")
    assert (user.name, user.role, user.revoked) == ("alice", Role.RADIOLOGIST, None)
    assert key.startswith("ca_") and len(key) >= 40
    with raw(store._db, database) as db:
        stored = " ".join(str(value) for row in db.execute("SELECT * FROM users")
                          for value in dict(row).values())
    assert key not in stored and key[3:] not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored
    assert store.authenticate_key(key) == Principal("alice", Role.RADIOLOGIST, "api-key")


def test_each_user_gets_a_different_key(tmp_path, database):
    store = UserStore(tmp_path)
    _, first = store.add("alice", "radiologist")
    _, second = store.add("bob", "radiologist")
    assert first != second
    assert store.authenticate_key(second).name == "bob"


def test_unknown_key_does_not_authenticate(tmp_path, database):
    store = UserStore(tmp_path)
    _, key = store.add("alice", "radiologist")
    assert store.authenticate_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.authenticate_key("") is None


def test_revoked_key_no_longer_authenticates(tmp_path, database):
    store = UserStore(tmp_path)
    _, key = store.add("alice", "radiologist")
    revoked = store.revoke("alice")
    assert revoked.revoked is not None
    assert store.authenticate_key(key) is None
    assert store.revoke("alice").revoked == revoked.revoked
    assert [(u.name, u.revoked) for u in store.list()] == [("alice", revoked.revoked)]


def test_user_names_are_never_reused(tmp_path, database):
    store = UserStore(tmp_path)
    store.add("alice", "radiologist")
    store.revoke("alice")
    with pytest.raises(UserExistsError, match="'alice' already exists"):
        store.add("alice", "admin")


@pytest.mark.parametrize("name", ["", "-alice", "a b", "x" * 65, "alice\n"])
def test_add_refuses_names_that_cannot_identify_a_user(tmp_path, name):
    with pytest.raises(InvalidUserNameError, match="invalid user name"):
        UserStore(tmp_path).add(name, "radiologist")


def test_add_refuses_an_unknown_role(tmp_path):
    store = UserStore(tmp_path)
    with pytest.raises(UnknownRoleError, match="unknown role 'surgeon'"):
        store.add("alice", "surgeon")
    assert store.list() == []


def test_revoking_an_unknown_user_names_the_way_out(tmp_path, database):
    with pytest.raises(UnknownUserError, match="users list"):
        UserStore(tmp_path).revoke("nobody")


# JWTs from trusted issuers


def public_pem(private_key) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {"iss": ISSUER, "sub": "ehr-client", "aud": AUDIENCE, "iat": now, "exp": now + 120,
            "jti": uuid.uuid4().hex}
    return {name: value for name, value in (base | overrides).items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def issuers(tmp_path, ec_key, database):
    registry = TrustedIssuers(tmp_path)
    registry.trust_issuer(ISSUER, public_pem(ec_key), "pharmacist", audience=AUDIENCE)
    return registry


def test_valid_es384_token_authenticates_as_the_issuers_role(issuers, ec_key):
    token = jwt.encode(claims(), ec_key, algorithm="ES384")
    assert issuers.authenticate_jwt(token) == Principal(ISSUER, Role.PHARMACIST, "jwt")


def test_replayed_jti_is_rejected(issuers, ec_key):
    token = jwt.encode(claims(), ec_key, algorithm="ES384")
    assert issuers.authenticate_jwt(token) is not None
    assert issuers.authenticate_jwt(token) is None
    same_jti = jwt.encode(claims(jti="fixed"), ec_key, algorithm="ES384")
    assert issuers.authenticate_jwt(same_jti) is not None
    assert issuers.authenticate_jwt(jwt.encode(claims(jti="fixed"), ec_key,
                                               algorithm="ES384")) is None


def test_expired_token_is_rejected(issuers, ec_key):
    now = int(time.time())
    token = jwt.encode(claims(iat=now - 400, exp=now - 200), ec_key, algorithm="ES384")
    assert issuers.authenticate_jwt(token) is None


def test_token_living_longer_than_five_minutes_is_rejected(issuers, ec_key):
    now = int(time.time())
    token = jwt.encode(claims(iat=now, exp=now + 3600), ec_key, algorithm="ES384")
    assert issuers.authenticate_jwt(token) is None


def test_untrusted_issuer_is_rejected_even_with_a_trusted_key(issuers, ec_key):
    token = jwt.encode(claims(iss="https://evil.example.org"), ec_key, algorithm="ES384")
    assert issuers.authenticate_jwt(token) is None


def test_token_signed_by_another_key_is_rejected(issuers):
    other = ec.generate_private_key(ec.SECP384R1())
    assert issuers.authenticate_jwt(jwt.encode(claims(), other, algorithm="ES384")) is None


def test_wrong_or_missing_audience_is_rejected(issuers, ec_key):
    assert issuers.authenticate_jwt(
        jwt.encode(claims(aud="https://other.example.org"), ec_key, algorithm="ES384")) is None
    assert issuers.authenticate_jwt(jwt.encode(claims(aud=None), ec_key, algorithm="ES384")) \
        is None


def test_audience_is_not_checked_when_the_issuer_has_none(tmp_path, database, ec_key):
    registry = TrustedIssuers(tmp_path)
    registry.trust_issuer(ISSUER, public_pem(ec_key), "pharmacist")
    token = jwt.encode(claims(aud="https://anything.example.org"), ec_key, algorithm="ES384")
    assert registry.authenticate_jwt(token) is not None


@pytest.mark.parametrize("claim", ["exp", "iat", "jti"])
def test_token_missing_a_required_claim_is_rejected(issuers, ec_key, claim):
    token = jwt.encode(claims(**{claim: None}), ec_key, algorithm="ES384")
    assert issuers.authenticate_jwt(token) is None


def test_unsigned_alg_none_token_is_rejected(issuers):
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = f"{header}.{b64(json.dumps(claims()).encode())}."
    assert jwt.get_unverified_header(token)["alg"] == "none"
    assert issuers.authenticate_jwt(token) is None


def test_hs256_token_forged_with_the_public_key_is_rejected(issuers, ec_key):
    signing_input = (b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "."
                     + b64(json.dumps(claims()).encode()))
    secret = public_pem(ec_key).encode()
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert issuers.authenticate_jwt(f"{signing_input}.{b64(signature)}") is None


def test_garbage_token_is_rejected(issuers):
    assert issuers.authenticate_jwt("not-a-jwt") is None


def test_rsa_issuer_accepts_rs256(tmp_path, database):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    registry = TrustedIssuers(tmp_path)
    trusted = registry.trust_issuer(ISSUER, public_pem(key), "gateway")
    assert trusted.algorithms == ["RS256", "RS384"]
    token = jwt.encode(claims(), key, algorithm="RS256")
    assert registry.authenticate_jwt(token) == Principal(ISSUER, Role.GATEWAY, "jwt")


def test_trust_issuer_refuses_unusable_keys(tmp_path):
    registry = TrustedIssuers(tmp_path)
    with pytest.raises(PublicKeyError, match="not a PEM public key"):
        registry.trust_issuer(ISSUER, "hello", "pharmacist")
    with pytest.raises(PublicKeyError, match="EC P-256/P-384"):
        registry.trust_issuer(ISSUER, public_pem(ed25519.Ed25519PrivateKey.generate()),
                              "pharmacist")
    with pytest.raises(UnknownRoleError):
        registry.trust_issuer(ISSUER, public_pem(ec.generate_private_key(ec.SECP256R1())),
                              "doctor")
