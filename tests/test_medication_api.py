"""`POST /v1/medication/risk` through FastAPI's TestClient on an app mounting the handler."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clinassist.serving.medication import api
from clinassist.serving.medication.kb import KnowledgeBase
from clinassist.serving.medication.review import MedicationReview

URL = "/v1/medication/risk"
ISSUE_EXAMPLE = {
    "patient": {"age": 78, "sex": "female", "egfr": 38, "allergies": ["penicillin"],
                "conditions": ["heart failure"]},
    "medications": [{"name": "warfarin"}, {"name": "Advil", "dose": "400 mg", "route": "oral"},
                    {"rxnorm": "36567"}],
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = FastAPI()
    app.add_api_route(URL, api.medication_risk, methods=["POST"],
                      openapi_extra=api.RISK_OPENAPI, responses=api.ERRORS)
    kb = KnowledgeBase.open(tmp_path_factory.getbasetemp() / "medication" / "kb.sqlite")
    app.state.medication_review = MedicationReview(kb)
    return TestClient(app)


def test_issue_example_returns_ranked_alerts_score_and_kb_provenance(client):
    response = client.post(URL, json=ISSUE_EXAMPLE)
    assert response.status_code == 200
    body = response.json()
    warfarin_advil = next(a for a in body["alerts"] if set(a["drugs"]) == {"warfarin", "Advil"})
    assert warfarin_advil["severity"] == "major" and warfarin_advil["type"] == "interaction"
    assert warfarin_advil["evidence"]["kind"] == "knowledge-base"
    assert body["knowledge_base"]["version"]
    assert {s["id"] for s in body["knowledge_base"]["sources"]} >= {"ansm-2020-10"}
    assert body["risk"]["gerontonet"]["score"] == 2  # heart failure 1, eGFR < 60 1
    for alert in body["alerts"]:
        assert {"severity", "type", "drugs", "evidence", "text"} <= alert.keys()


@pytest.mark.parametrize("payload, status, code, reason", [
    (b"{not json", 400, "not-json", "not JSON"),
    ({"patient": {}}, 422, "invalid-request", "medications: Field required"),
    ({"medications": []}, 422, "invalid-request", "at least 1 item"),
    ({"medications": [{"dose": "5 mg"}]}, 422, "invalid-request",
     "give at least one of name, rxnorm or atc"),
    ({"medications": [{"name": "warfarin"}], "patient": {"egfr": -3}}, 422, "invalid-request",
     "patient.egfr"),
    ({"medications": [{"nmae": "warfarin"}]}, 422, "invalid-request", "medications.0.nmae"),
    ({"medications": [{"atc": "M01A"}]}, 422, "invalid-request", "medications.0.atc"),
    ({"medications": [{"name": "ibuprofin"}]}, 422, "unresolved-drugs", "did you mean: ibuprofen"),
])
def test_bad_input_gets_4xx_with_a_reason(client, payload, status, code, reason):
    if isinstance(payload, bytes):
        response = client.post(URL, content=payload,
                               headers={"Content-Type": "application/json"})
    else:
        response = client.post(URL, json=payload)
    assert response.status_code == status
    assert response.json()["error"] == code
    assert reason in response.json()["reason"]


def test_oversized_body_is_refused_before_parsing(client):
    response = client.post(URL, content=b" " * (api.MAX_BODY_BYTES + 1),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "too-large"


def test_report_mode_reviews_the_rest_and_lists_unknown_drugs(client):
    response = client.post(URL, json={"medications": [{"name": "warfarin"}, {"name": "aspirin"},
                                                      {"name": "zzzunknown"}],
                                      "options": {"unresolved": "report"}})
    assert response.status_code == 200
    body = response.json()
    assert [u["input"] for u in body["unresolved"]] == ["zzzunknown"]
    assert body["alerts"][0]["severity"] == "contraindicated"


def test_review_opens_the_kb_from_clinassist_home_when_the_app_has_none(
        tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLINASSIST_HOME", str(tmp_path_factory.getbasetemp() / "medication"))
    app = FastAPI()
    app.add_api_route(URL, api.medication_risk, methods=["POST"])
    response = TestClient(app).post(URL, json={"medications": [{"name": "simvastatin"},
                                                               {"name": "clarithromycin"}]})
    assert response.status_code == 200
    assert response.json()["alerts"][0]["severity"] == "contraindicated"


def test_missing_kb_and_data_gives_503_with_the_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINASSIST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLINASSIST_DATA", str(tmp_path / "no-data"))
    app = FastAPI()
    app.add_api_route(URL, api.medication_risk, methods=["POST"])
    response = TestClient(app).post(URL, json={"medications": [{"name": "warfarin"}]})
    assert response.status_code == 503 and response.json()["error"] == "kb-unavailable"
    assert "clinassist kb build" in response.json()["reason"]
