"""Worklist priority: urgent first, never lowered, routine escalated after the maximum wait;
`GET /v1/worklist` behind the project's auth and audit middleware."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from clinassist.serving.gateway import worklist_api
from clinassist.serving.gateway.worklist import MAX_WAIT_ENV, Worklist
from clinassist.serving.security import AuditTrail, AuthAuditMiddleware, UserStore

T0 = 1_800_000_000.0
MINUTE = 60.0


@pytest.fixture
def worklist(tmp_path, database):
    """On SQLite, then on PostgreSQL."""
    return Worklist(tmp_path, max_wait=timedelta(minutes=30))


def record(worklist, study, flag, probability=None, at=T0, patient="P1", result="r"):
    worklist.record(study, patient, "ACC", flag, probability, at, result)


def priorities(worklist, now):
    return [(e.study_instance_uid, e.priority, e.escalated) for e in worklist.entries(now)]


def test_urgent_studies_come_first_then_the_longest_waiting(worklist):
    record(worklist, "routine-old", "routine", 0.1, at=T0)
    record(worklist, "urgent-new", "urgent", 0.9, at=T0 + 10 * MINUTE)
    record(worklist, "routine-new", "routine", 0.2, at=T0 + 5 * MINUTE)
    record(worklist, "unscored", None, at=T0 + 1 * MINUTE)
    assert [e.study_instance_uid for e in worklist.entries(T0 + 11 * MINUTE)] == [
        "urgent-new", "routine-old", "unscored", "routine-new"]


def test_a_later_routine_result_never_lowers_an_urgent_study(worklist):
    record(worklist, "s", "urgent", 0.9, result="first")
    record(worklist, "s", "routine", 0.1, at=T0 + MINUTE, result="second")
    record(worklist, "s", None, at=T0 + 2 * MINUTE, result="third")
    [entry] = worklist.entries(T0 + 3 * MINUTE)
    assert (entry.priority, entry.probability, entry.result_id) == ("urgent", 0.9, "first")


def test_a_later_urgent_result_raises_a_routine_study(worklist):
    record(worklist, "s", "routine", 0.1)
    record(worklist, "s", "urgent", 0.8, at=T0 + MINUTE, result="urgent-one")
    [entry] = worklist.entries(T0 + 2 * MINUTE)
    assert (entry.priority, entry.probability, entry.result_id) == ("urgent", 0.8, "urgent-one")


def test_waiting_time_counts_from_the_first_instance_of_the_study(worklist):
    record(worklist, "s", "routine", 0.1, at=T0 + 10 * MINUTE)
    record(worklist, "s", "routine", 0.2, at=T0)
    assert worklist.entries(T0 + 20 * MINUTE)[0].waiting_minutes == 20.0


def test_routine_and_unscored_studies_are_escalated_after_the_maximum_wait(worklist):
    record(worklist, "routine", "routine", 0.1)
    record(worklist, "unscored", None)
    assert priorities(worklist, T0 + 29 * MINUTE) == [
        ("routine", "routine", False), ("unscored", "unscored", False)]
    assert priorities(worklist, T0 + 30 * MINUTE) == [
        ("routine", "urgent", True), ("unscored", "urgent", True)]


def test_recording_the_same_result_twice_changes_nothing(worklist):
    record(worklist, "s", "routine", 0.3)
    before = worklist.entries(T0 + MINUTE)
    record(worklist, "s", "routine", 0.3)
    assert worklist.entries(T0 + MINUTE) == before


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINASSIST_HOME", str(tmp_path))
    monkeypatch.setenv(MAX_WAIT_ENV, "45")
    app = FastAPI(middleware=[Middleware(AuthAuditMiddleware, home=tmp_path,
                                         routes=[worklist_api.ROUTE])])
    app.add_api_route("/v1/worklist", worklist_api.worklist, methods=["GET"])
    return TestClient(app)


def bearer(home, role):
    _, key = UserStore(home).add(f"user-{role}", role)
    return {"Authorization": f"Bearer {key}"}


def test_worklist_api_lists_studies_for_radiologists_and_audits_the_patients(tmp_path, client):
    Worklist(tmp_path).record("1.2.3", "PATIENT-7", "ACC7", "urgent", 0.9, T0, "r1")
    response = client.get("/v1/worklist", headers=bearer(tmp_path, "radiologist"))
    assert response.status_code == 200
    [study] = response.json()["studies"]
    assert (study["study_instance_uid"], study["priority"], study["patient_id"]) == (
        "1.2.3", "urgent", "PATIENT-7")
    [row] = AuditTrail(tmp_path).records()
    assert (row.action, row.outcome, len(row.patients)) == ("worklist:read", "200", 1)
    assert "PATIENT-7" not in row.patients


def test_worklist_api_escalates_with_the_configured_maximum_wait(tmp_path, client):
    Worklist(tmp_path).record("1.2.3", "P", "A", "routine", 0.1, time.time() - 50 * MINUTE, "r")
    [study] = client.get("/v1/worklist", headers=bearer(tmp_path, "radiologist")).json()["studies"]
    assert (study["priority"], study["escalated"]) == ("urgent", True)


@pytest.mark.parametrize("role, status", [("pharmacist", 403), ("ml_engineer", 403),
                                          ("gateway", 200), ("admin", 200)])
def test_worklist_api_needs_the_worklist_read_permission(tmp_path, client, role, status):
    assert client.get("/v1/worklist", headers=bearer(tmp_path, role)).status_code == status


def test_worklist_api_refuses_anonymous_callers(client):
    assert client.get("/v1/worklist").status_code == 401


def test_a_new_result_only_ever_raises_the_study_priority():
    from clinassist.serving.gateway.worklist import raised

    assert raised(None, "routine") == "routine"
    assert raised("urgent", "routine") == "urgent"
    assert raised("routine", "urgent") == "urgent"
    assert raised("routine", None) == "routine"
    assert raised(None, None) == "unscored"
