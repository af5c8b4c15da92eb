"""Radiologist feedback over HTTP, against the started service (`clinassist serve`)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from dicom_fixtures import real_cr
from clinassist.serving.gateway.worklist import Worklist
from clinassist.serving.imaging.feedback import FeedbackStore
from clinassist.serving.security import AuditTrail


def feedback_url(service, result_id: str) -> str:
    return f"{service.url}/v1/imaging/results/{result_id}/feedback"


def send(service, result_id: str, body: bytes | dict, role: str = "radiologist") -> httpx.Response:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    return httpx.post(feedback_url(service, result_id), content=content, timeout=30,
                      headers={**service.headers(role), "Content-Type": "application/json"})


def triaged(service) -> dict:
    response = httpx.post(service.url + "/v1/imaging/triage", content=real_cr(), timeout=120,
                          headers={**service.headers("radiologist"),
                                   "Content-Type": "application/dicom"})
    assert response.status_code == 200, response.text
    return response.json()


def audit_rows(service, resource: str, expected: list[tuple[str, str]],
               timeout: float = 10.0) -> list[tuple[str, str]]:
    """(actor, outcome) of the audit rows of `resource`, once `expected` are among them (each
    row is written after its response has gone out)."""
    trail = AuditTrail(service.home)
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in trail.records() if r.resource == resource]
        pairs = [(r.actor, r.outcome) for r in rows]
        if all(pairs.count(e) >= expected.count(e) for e in expected) or \
                time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


@pytest.fixture(scope="module")
def result(service):
    return triaged(service)


@pytest.fixture(scope="module")
def unanswered(service):
    """A result nobody gives feedback on."""
    return triaged(service)


def test_a_reading_is_stored_with_the_model_it_answers(service, result):
    response = send(service, result["id"], {"reading": "pneumonia", "reason": "RLL consolidation"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["reading"] == "pneumonia" and body["reason"] == "RLL consolidation"
    assert body["radiologist"] == "test-radiologist"
    assert body["model"] == result["model"]
    assert body["operating_point"] == result.get("operating_point")
    assert body["probability"] == result["probability"] and body["flag"] == result["flag"]
    assert body["agrees_with_model"] == (result["flag"] == "urgent")
    assert body["supersedes"] is None
    (stored,) = FeedbackStore(service.home).history(result["id"])
    assert stored.id == body["id"] and stored.study_instance_uid == result["study_instance_uid"]


def test_a_contradictory_second_answer_is_kept_and_the_newest_wins(service):
    result = triaged(service)
    first = send(service, result["id"], {"reading": "no_pneumonia"}).json()
    second = send(service, result["id"], {"reading": "pneumonia", "reason": "on second look"})
    assert second.status_code == 201
    assert second.json()["supersedes"] == first["id"]
    answer = httpx.get(feedback_url(service, result["id"]), headers=service.headers("radiologist"))
    assert answer.status_code == 200
    assert answer.json()["current"]["reading"] == "pneumonia"
    assert [item["reading"] for item in answer.json()["history"]] == ["no_pneumonia", "pneumonia"]
    resource = f"/v1/imaging/results/{result['id']}/feedback"
    rows = [r for r in audit_rows(service, resource, [("test-radiologist", "201")] * 2)
            if r.action == "imaging:feedback"]
    assert [(r.actor, r.outcome) for r in rows] == [("test-radiologist", "201")] * 2
    assert all(r.patients and r.patients[0].startswith("pid-") for r in rows)


@pytest.mark.parametrize("role, status", [("pharmacist", 403), ("ml_engineer", 403),
                                          ("gateway", 403), ("admin", 201)])
def test_only_radiologists_and_admins_may_give_feedback(service, result, role, status):
    response = send(service, result["id"], {"reading": "no_pneumonia"}, role=role)
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["error"] == "forbidden"
        assert "imaging:feedback" in response.json()["reason"]


def test_without_credentials_the_answer_is_401_and_audited(service, result):
    response = httpx.post(feedback_url(service, result["id"]), json={"reading": "pneumonia"})
    assert response.status_code == 401
    rows = audit_rows(service, f"/v1/imaging/results/{result['id']}/feedback",
                      [("anonymous", "401")])
    assert ("anonymous", "401") in [(r.actor, r.outcome) for r in rows]


def test_ml_engineers_may_read_the_feedback(service, result):
    response = httpx.get(feedback_url(service, result["id"]),
                         headers=service.headers("ml_engineer"))
    assert response.status_code == 200 and response.json()["history"]


def test_an_unknown_result_is_404(service):
    unknown = uuid.uuid4().hex
    response = send(service, unknown, {"reading": "pneumonia"})
    assert response.status_code == 404 and response.json()["error"] == "not-found"
    assert FeedbackStore(service.home).history(unknown) == []


@pytest.mark.parametrize("body, status, code", [
    (b"", 400, "not-json"),
    (b"{reading: pneumonia}", 400, "not-json"),
    (b"\xff\xfe", 400, "not-json"),
    (b"[" * 5000 + b"]" * 5000, 400, "not-json"),  # deeper than the decoder should recurse
    ({"reading": "maybe"}, 422, "invalid-feedback"),
    ({}, 422, "invalid-feedback"),
    ([], 422, "invalid-feedback"),
    ({"reading": "pneumonia", "grade": 3}, 422, "invalid-feedback"),
    ({"reading": "pneumonia", "reason": 42}, 422, "invalid-feedback"),
    ({"reading": "pneumonia", "reason": "x" * 2001}, 422, "invalid-feedback"),
    (b'{"reading": "pneumonia", "reason": "' + b"x" * 20000 + b'"}', 413, "too-large"),
])
def test_malformed_bodies_are_refused_and_nothing_is_stored(service, unanswered, body, status,
                                                            code):
    response = send(service, unanswered["id"], body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["reason"]
    assert FeedbackStore(service.home).history(unanswered["id"]) == []


def test_the_worklist_shows_which_studies_have_feedback(service, unanswered):
    answered = triaged(service)
    assert send(service, answered["id"], {"reading": "not_assessable"}).status_code == 201
    worklist = Worklist(service.home)  # as the gateway records the studies it triaged
    other_study = "1.2.826.0.1.3680043.8.498.1"
    for study, entry in ((answered["study_instance_uid"], answered), (other_study, unanswered)):
        worklist.record(study, "P1", "A1", entry["flag"], entry["probability"], time.time(),
                        entry["id"])
    response = httpx.get(service.url + "/v1/worklist", headers=service.headers("radiologist"))
    assert response.status_code == 200
    feedback = {s["study_instance_uid"]: s["feedback"] for s in response.json()["studies"]}
    assert feedback == {answered["study_instance_uid"]: "not_assessable", other_study: None}
