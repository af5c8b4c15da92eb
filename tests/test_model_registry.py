"""The model registry: versioned bundles in BentoML's model store with stages in an append-only
ledger, promotion only past a passed gate (or an admin's audited override), the service serving
the production version from the next request and after a restart, and rollback in one command."""

from __future__ import annotations

import io
import json
import math
import sqlite3
from contextlib import closing

import httpx
import pydicom
import pytest

from dicom_fixtures import real_cr
from registry_fixtures import COMMITTED, gate_report, shifted_bundle
from service_process import cli, start
from store_sql import drop_append_only, raw
from clinassist.bundle import file_sha256, read_metadata
from clinassist.serving.imaging.model_registry import (LEDGER_DB, MODEL_STORE_ENV, Kind,
                                                       ModelRegistry, ProductionFollower,
                                                       RegistryError, Stage, production_dir)
from clinassist.serving.security import AuditTrail
from clinassist.serving.storage import DATABASE_URL_ENV

COMMITTED_VERSION = read_metadata(COMMITTED)[1]["version"]
SHIFT = 1.0


def sr_version(service, answer: dict) -> set[str]:
    sr = httpx.get(service.url + answer["objects"]["sr"], headers=service.headers("ml_engineer"),
                   timeout=60)
    return {str(e.get("SoftwareVersions")) for e in
            pydicom.dcmread(io.BytesIO(sr.content)).ContributingEquipmentSequence}


def models(service, *args: str, key: str | None = None):
    return cli(service.home, "models", *args, env={"CLINASSIST_API_KEY": key or ""})


def shifted_probability(probability: float, temperature: float) -> float:
    logit = temperature * math.log(probability / (1 - probability))
    return 1 / (1 + math.exp(-(logit + SHIFT) / temperature))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    service = start(tmp_path_factory.mktemp("registry-home"))
    yield service
    if service.process.poll() is None:  # the test stops it to restart it
        service.stop()


def test_promote_serve_roll_back_and_restart(served, tmp_path):
    before = served.triage(real_cr())
    assert before["model"]["version"] == COMMITTED_VERSION
    version = f"{COMMITTED_VERSION}-shifted"
    candidate = shifted_bundle(tmp_path / "candidate", version, SHIFT)
    assert models(served, "register", str(candidate)).returncode == 0

    refused = models(served, "promote", version)
    assert refused.returncode == 2 and "has not been through the gate" in refused.stderr
    engineer = models(served, "promote", version, "--override", key=served.keys["ml_engineer"])
    assert engineer.returncode == 2 and "needs the admin role" in engineer.stderr
    admin = models(served, "promote", version, "--override", "--reason", "test override",
                   key=served.keys["admin"])
    assert admin.returncode == 0, admin.stderr

    promoted = served.triage(real_cr())  # the next request, no restart
    assert promoted["model"]["version"] == version and version in sr_version(served, promoted)
    temperature = before["operating_point"]["temperature"]
    assert promoted["probability"] == pytest.approx(
        shifted_probability(before["probability"], temperature), abs=1e-5)

    assert models(served, "rollback", "--reason", "test").returncode == 0
    rolled_back = served.triage(real_cr())
    assert rolled_back["model"]["version"] == COMMITTED_VERSION
    assert rolled_back["probability"] == pytest.approx(before["probability"], abs=1e-6)
    listed = {v["version"]: v for v in json.loads(models(served, "list", "--json").stdout)}
    assert (listed[COMMITTED_VERSION]["stage"], listed[version]["stage"]) == ("production",
                                                                             "archived")

    trail = [r for r in AuditTrail(served.home).records() if r.action == "models:manage"]
    outcomes = [(r.resource.rsplit("/", 1)[1], r.outcome) for r in trail]
    assert outcomes == [(version, "success"), (version, "409"), (version, "403"),
                        (version, "success"), (COMMITTED_VERSION, "success")]
    assert trail[3].actor.startswith("test-admin (via cli:") and trail[3].role == "admin"
    assert "with override" in trail[3].detail

    ModelRegistry(served.home).record_gate(version, gate_report(candidate, passed=True))
    assert models(served, "promote", version).returncode == 0  # a passed gate: no override
    served.stop()
    restarted = start(served.home, keys=served.keys)
    try:
        assert restarted.triage(real_cr())["model"]["version"] == version
    finally:
        restarted.stop()


@pytest.fixture
def registry(tmp_path, database):
    """A registry whose ledger is in SQLite, then in PostgreSQL."""
    return ModelRegistry(tmp_path / "home")


def test_an_empty_registry_serves_the_committed_bundle_until_the_first_change(registry, tmp_path):
    assert production_dir(registry.home) == COMMITTED and registry.versions() == []
    candidate = shifted_bundle(tmp_path / "c", "7.0.0")
    registry.register(candidate, "tester")
    stages = {v.version: v.stage for v in registry.versions()}
    assert stages == {COMMITTED_VERSION: Stage.PRODUCTION, "7.0.0": Stage.CANDIDATE}
    stored = registry.get("7.0.0").path
    assert stored.is_relative_to(registry.home / "bentoml" / "models" / "cxr_pneumonia")
    assert file_sha256(stored / "model.onnx") == file_sha256(candidate / "model.onnx")
    assert production_dir(registry.home) == registry.get(COMMITTED_VERSION).path  # its copy


def test_a_version_is_bound_to_its_model_file_and_so_is_its_gate(registry, tmp_path):
    registry.register(shifted_bundle(tmp_path / "a", "7.0.0", 1.0), "tester")
    other = shifted_bundle(tmp_path / "b", "7.0.0", 2.0)
    with pytest.raises(RegistryError, match="already registered with another model file"):
        registry.register(other, "tester")
    with pytest.raises(RegistryError, match="another model file"):
        registry.record_gate("7.0.0", gate_report(other, passed=True))
    registry.record_gate("7.0.0", gate_report(tmp_path / "a", passed=False))
    with pytest.raises(RegistryError, match="its gate failed: site: the candidate is not shown"):
        registry.promote("7.0.0", "tester", "test")


def test_rollback_steps_back_one_promotion_at_a_time(registry, tmp_path):
    for version in ("7.0.0", "7.1.0"):
        registry.register(shifted_bundle(tmp_path / version, version), "tester")
        registry.record_gate(version, gate_report(tmp_path / version, passed=True))
        registry.promote(version, "tester", "test")
    assert registry.rollback("tester", "test").production.version == "7.0.0"
    assert registry.rollback("tester", "test").production.version == COMMITTED_VERSION
    with pytest.raises(RegistryError, match="no earlier production version"):
        registry.rollback("tester", "test")
    kinds = [(row["version"], row["kind"]) for row in registry.history()
             if row["stage"] == "production"]
    assert kinds == [(COMMITTED_VERSION, "initial"), ("7.0.0", "promoted"), ("7.1.0", "promoted"),
                     ("7.0.0", "rolled back"), (COMMITTED_VERSION, "rolled back")]


def test_of_two_promotions_at_once_the_second_to_write_is_refused(registry, tmp_path,
                                                                  monkeypatch):
    """Both pass their checks on the same ledger; the one that writes second finds the
    ledger changed and changes nothing, rather than archiving a version already archived."""
    from clinassist.serving.imaging import model_registry

    for version in ("7.0.0", "7.1.0"):
        registry.register(shifted_bundle(tmp_path / version, version), "tester")
        registry.record_gate(version, gate_report(tmp_path / version, passed=True))
    other_admin = ModelRegistry(registry.home)
    load, raced = model_registry.Bundle.load, []

    def load_while_another_promotes(path, *args, **kwargs):  # between the checks and the write
        if not raced:
            raced.append("admin-b")  # their own promotion loads the bundle too
            other_admin.promote("7.1.0", "admin-b", "at the same time")
        return load(path, *args, **kwargs)

    monkeypatch.setattr(model_registry.Bundle, "load", load_while_another_promotes)
    with pytest.raises(RegistryError, match="changed while this ran"):
        registry.promote("7.0.0", "admin-a", "at the same time")
    assert registry.production().version == "7.1.0"
    assert [(row["version"], row["kind"]) for row in registry.history()
            if row["stage"] == "production"] == [(COMMITTED_VERSION, "initial"),
                                                 ("7.1.0", "promoted")]


@pytest.mark.parametrize("statement", ["UPDATE stage_changes SET stage = 'production'",
                                       "DELETE FROM versions", "UPDATE gates SET passed = 1"])
def test_the_ledger_is_append_only(registry, database, tmp_path, statement):
    registry.register(shifted_bundle(tmp_path / "a", "7.0.0"), "tester")
    registry.record_gate("7.0.0", gate_report(tmp_path / "a", passed=False))
    with raw(registry._db, database) as db, pytest.raises(Exception, match="append-only"):
        db.execute(statement)
    assert {v.version: v.stage for v in registry.versions()} == {
        COMMITTED_VERSION: Stage.PRODUCTION, "7.0.0": Stage.CANDIDATE}


def test_dropped_triggers_are_put_back_when_the_ledger_is_opened(registry, database, tmp_path):
    registry.register(shifted_bundle(tmp_path / "a", "7.0.0"), "tester")
    with raw(registry._db, database) as db:
        drop_append_only(db, "stage_changes")
    reopened = ModelRegistry(registry.home)
    with raw(reopened._db, database) as db, pytest.raises(Exception, match="append-only"):
        db.execute("DELETE FROM stage_changes")
    assert len(reopened.history()) == 3  # the committed bundle registered, initial; 7.0.0


EARLIER_RELEASE = """
CREATE TABLE versions (
    model TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL, path TEXT NOT NULL,
    registered TEXT NOT NULL, registered_by TEXT NOT NULL, source TEXT NOT NULL,
    PRIMARY KEY (model, version));
CREATE TABLE gates (
    id INTEGER PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL,
    passed INTEGER NOT NULL, recorded TEXT NOT NULL, report TEXT NOT NULL);
CREATE TABLE stage_changes (
    id INTEGER PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL, stage TEXT NOT NULL,
    kind TEXT NOT NULL, changed TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL,
    gate_id INTEGER, override INTEGER NOT NULL DEFAULT 0);
CREATE TRIGGER versions_no_delete BEFORE DELETE ON versions  -- the others: put back on opening
BEGIN SELECT RAISE(ABORT, 'the model registry is append-only'); END;
INSERT INTO versions VALUES ('cxr_pneumonia', '6.0.0', 'ab12', 'bentoml/models/cxr_pneumonia/6',
                             '2026-11-01T00:00:00+00:00', 'tester', 'committed bundle');
INSERT INTO stage_changes (model, version, stage, kind, changed, actor, reason) VALUES
    ('cxr_pneumonia', '6.0.0', 'production', 'initial', '2026-11-01T00:00:01+00:00', 'tester',
     'production of an empty registry: the committed bundle');
"""


def test_a_ledger_from_before_migrations_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)  # only SQLite homes are that old
    home = tmp_path / "home"
    home.mkdir()
    with closing(sqlite3.connect(home / LEDGER_DB)) as db:
        db.executescript(EARLIER_RELEASE)
    registry = ModelRegistry(home)
    assert registry.production().version == "6.0.0"
    registry.register(shifted_bundle(tmp_path / "a", "7.0.0"), "tester")
    assert [(row["version"], row["stage"]) for row in registry.history()] == [
        ("6.0.0", "production"), ("7.0.0", "candidate")]
    with closing(sqlite3.connect(home / LEDGER_DB)) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("model_registry_0001",)]
        for statement in ("DELETE FROM versions", "UPDATE stage_changes SET stage = 'x'"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(statement)


def test_the_model_service_keeps_serving_when_the_named_bundle_does_not_load(registry, tmp_path):
    follower = ProductionFollower(registry.home, threads=1)
    assert follower.current().version == COMMITTED_VERSION
    registry.register(shifted_bundle(tmp_path / "a", "7.0.0"), "tester")
    registry.record_gate("7.0.0", gate_report(tmp_path / "a", passed=True))
    registry.promote("7.0.0", "tester", "test")
    assert follower.current().version == "7.0.0"
    registry.rollback("tester", "test")
    assert follower.current().version == COMMITTED_VERSION
    stored = registry.get("7.0.0").path / "model.onnx"
    stored.write_bytes(stored.read_bytes()[:-10])  # damaged in the store after the rollback
    with registry._db.write() as db:  # production by hand, past promote's check of the bundle
        registry._insert(db, "7.0.0", Stage.PRODUCTION, Kind.PROMOTED, "tester", "by hand")
    assert follower.current().version == COMMITTED_VERSION  # logged, still serving
    with pytest.raises(Exception, match="does not match the sha256"):
        registry.promote("7.0.0", "tester", "test")  # never pointed at a damaged bundle


def test_two_first_registrations_at_once_make_one_initial_production(registry, tmp_path,
                                                                    monkeypatch):
    """Both find the registry empty; the one that writes second finds the committed bundle
    registered and production already, and adds only its own candidate."""
    from clinassist.serving.imaging import model_registry

    other = ModelRegistry(registry.home)
    load, raced = model_registry.Bundle.load, []

    def load_while_another_registers(path, *args, **kwargs):
        if not raced:
            raced.append(path)
            other.register(shifted_bundle(tmp_path / "b", "7.1.0"), "tester-b")
        return load(path, *args, **kwargs)

    candidate = shifted_bundle(tmp_path / "a", "7.0.0")
    monkeypatch.setattr(model_registry.Bundle, "load", load_while_another_registers)
    registry.register(candidate, "tester-a")
    assert [(row["version"], row["kind"]) for row in registry.history()] == [
        (COMMITTED_VERSION, "registered"), (COMMITTED_VERSION, "initial"),
        ("7.1.0", "registered"), ("7.0.0", "registered")]


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # shared by machines
def test_replicas_sharing_the_database_and_model_store_follow_one_promotion(
        database, tmp_path, monkeypatch):
    """Two machines' homes, one PostgreSQL ledger and one mounted model store: a promotion
    made from one home is what the other's model service serves at its next batch."""
    monkeypatch.setenv(MODEL_STORE_ENV, str(tmp_path / "shared-models"))
    here, there = ModelRegistry(tmp_path / "home-a"), tmp_path / "home-b"
    follower = ProductionFollower(there, threads=1)
    assert follower.current().version == COMMITTED_VERSION
    here.register(shifted_bundle(tmp_path / "c", "7.0.0"), "tester")
    here.record_gate("7.0.0", gate_report(tmp_path / "c", passed=True))
    here.promote("7.0.0", "tester", "test")
    assert follower.current().version == "7.0.0"
    assert follower.bundle.path == tmp_path / "shared-models" / "cxr_pneumonia" / "7.0.0"
    assert not (there / "bentoml").exists()
