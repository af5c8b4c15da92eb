"""The `users` and `audit` commands, called through an argparse parser as the CLI calls them."""

from __future__ import annotations

import argparse
import json
import sqlite3

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clinassist.serving.security import AuditTrail, Role, UserStore
from clinassist.serving.security.cli import register
from clinassist.serving.security.errors import PublicKeyError, UnknownRoleError, UnknownUserError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINASSIST_HOME", str(tmp_path))
    return tmp_path


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="clinassist")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_users_add_prints_the_key_once_with_a_warning(home, capsys):
    assert run("users", "add", "--name", "alice", "--role", "radiologist") == 0
    out, err = capsys.readouterr()
    key = out.splitlines()[1]
    assert key.startswith("ca_") and out.count(key) == 1
    assert "not stored" in err and key not in err
    assert UserStore(home).authenticate_key(key).role == Role.RADIOLOGIST
    assert key.encode() not in b"".join(p.read_bytes() for p in home.glob("*.db*"))


def test_users_add_with_an_unknown_role_is_the_users_error(home):
    with pytest.raises(UnknownRoleError, match="pharmacist"):
        run("users", "add", "--name", "alice", "--role", "pharmacy")


def test_users_list_and_revoke(home, capsys):
    run("users", "add", "--name", "bob", "--role", "pharmacist")
    run("users", "add", "--name", "alice", "--role", "admin")
    capsys.readouterr()
    assert run("users", "list") == 0
    header, alice, bob = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "ROLE", "CREATED", "REVOKED"]
    assert alice.split()[:2] == ["alice", "admin"] and alice.endswith("-")
    assert bob.split()[:2] == ["bob", "pharmacist"]

    assert run("users", "revoke", "--name", "bob") == 0
    assert capsys.readouterr().out.startswith("revoked user bob")
    run("users", "list")
    bob = capsys.readouterr().out.splitlines()[2]
    assert not bob.endswith("-")
    with pytest.raises(UnknownUserError, match="no user named 'carol'"):
        run("users", "revoke", "--name", "carol")


def test_users_trust_issuer_reads_a_pem_file(home, tmp_path, capsys):
    pem = tmp_path / "ehr.pem"
    pem.write_bytes(ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert run("users", "trust-issuer", "--issuer", "https://ehr.example.org",
               "--public-key", str(pem), "--role", "pharmacist",
               "--audience", "https://cds.example.org") == 0
    assert "ES384" in capsys.readouterr().out
    with pytest.raises(PublicKeyError, match="cannot read public key"):
        run("users", "trust-issuer", "--issuer", "x", "--public-key", str(tmp_path / "none.pem"),
            "--role", "pharmacist")


def test_user_management_is_itself_audited(home):
    run("users", "add", "--name", "alice", "--role", "admin")
    run("users", "revoke", "--name", "alice")
    rows = AuditTrail(home).records()
    assert [(r.action, r.resource, r.detail) for r in rows] == [
        ("users:manage", "users/alice", "added with role admin"),
        ("users:manage", "users/alice", "revoked")]
    assert all(r.actor.startswith("cli:") for r in rows)
    assert AuditTrail(home).export_fhir()[0]["type"]["code"] == "110137"


def test_audit_verify_reports_intact_then_broken(home, capsys):
    trail = AuditTrail(home)
    for status in (200, 403, 200):
        trail.record("alice", "radiologist", "imaging:results", "/results/1", status)
    assert run("audit", "verify") == 0
    assert capsys.readouterr().out.startswith("audit trail intact: 3 rows\n")

    with sqlite3.connect(trail.path) as db:
        db.execute("DROP TRIGGER audit_event_no_update")
        db.execute("UPDATE audit_event SET actor = 'mallory' WHERE id = 2")
    db.close()
    assert run("audit", "verify") == 1
    assert capsys.readouterr().out.startswith("audit trail BROKEN at row 2: ")


def test_audit_export_writes_a_fhir_collection_bundle(home, tmp_path):
    AuditTrail(home).record("alice", "radiologist", "imaging:triage", "/triage", 202, ["MRN-1"])
    output = tmp_path / "audit.json"
    assert run("audit", "export", "--output", str(output)) == 0
    bundle = json.loads(output.read_text())
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "collection")
    [entry] = bundle["entry"]
    assert entry["resource"]["resourceType"] == "AuditEvent"
    assert "MRN-1" not in output.read_text()
    assert AuditTrail(home).records()[-1].action == "audit:read"

    assert run("audit", "export", "--output", str(output), "--since", "2999-01-01") == 0
    assert json.loads(output.read_text())["entry"] == []
    with pytest.raises(SystemExit):
        run("audit", "export", "--since", "yesterday")
