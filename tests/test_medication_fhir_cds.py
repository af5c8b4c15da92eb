"""FHIR R4 Bundle in / DetectedIssue out, and the CDS Hooks services, over a TestClient."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fhir.resources.R4B.detectedissue import DetectedIssue

from clinassist.serving.medication import api, cds_api
from clinassist.serving.medication.cds_store import CdsStore
from clinassist.serving.medication.kb import KnowledgeBase
from clinassist.serving.medication.review import MedicationReview

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SELECT, SIGN = "clinassist-medication-order-select", "clinassist-medication-order-sign"


def medication(kind: str, rid: str, name: str, status: str = "active", rxnorm: str | None = None):
    concept = {"text": name}
    if rxnorm:
        concept["coding"] = [{"system": RXNORM, "code": rxnorm, "display": name}]
    resource = {"resourceType": kind, "id": rid, "status": status,
                "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": concept}
    if kind == "MedicationRequest":
        resource["intent"] = "order"
    return {"fullUrl": f"urn:uuid:{rid}", "resource": resource}


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1948-02-01"}
EGFR = {"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-11-01",
        "valueQuantity": {"value": 38, "unit": "mL/min/{1.73_m2}"}}
ALLERGY = {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"},
           "code": {"text": "penicillin"}}
BUNDLE = {"resourceType": "Bundle", "type": "collection", "entry": [
    {"resource": PATIENT}, {"resource": EGFR}, {"resource": ALLERGY},
    medication("MedicationRequest", "m1", "warfarin", rxnorm="11289"),
    medication("MedicationStatement", "m2", "Advil"),
    medication("MedicationRequest", "m3", "amoxicillin 500 MG Oral Tablet"),
    medication("MedicationRequest", "m4", "naproxen", status="stopped")]}


def bundle(*entries):
    return {"resourceType": "Bundle", "type": "searchset", "entry": list(entries)}


def hook_request(hook: str, drafts: list, current: list, **context) -> dict:
    return {"hook": hook, "hookInstance": "d1cba5bc-5b7c-4c4e-9a62-5fb3b1e0c3a0",
            "context": {"userId": "Practitioner/1", "patientId": "p1",
                        "draftOrders": bundle(*drafts), **context},
            "prefetch": {"patient": PATIENT, "medications": bundle(*current),
                         "egfr": bundle({"resource": EGFR})}}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = FastAPI()
    app.add_api_route("/v1/medication/risk/fhir", api.medication_risk_fhir, methods=["POST"])
    app.add_api_route("/v1/cds-services", cds_api.cds_discovery, methods=["GET"])
    app.add_api_route("/v1/cds-services/{service_id}", cds_api.cds_service, methods=["POST"])
    app.add_api_route("/v1/cds-services/{service_id}/feedback", cds_api.cds_feedback,
                      methods=["POST"])
    kb = KnowledgeBase.open(tmp_path_factory.getbasetemp() / "medication" / "kb.sqlite")
    app.state.medication_review = MedicationReview(kb)
    app.state.cds_store = CdsStore(tmp_path_factory.mktemp("cds") / "cds_feedback.db")
    return TestClient(app)


def assert_card_shape(card: dict) -> None:
    """CDS Hooks 2.0 Card: required summary (< 140), indicator, source.label; suggestions with
    labels and create/update/delete actions need a selectionBehavior."""
    assert isinstance(card["summary"], str) and len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["label"]
    for suggestion in card.get("suggestions", []):
        assert suggestion["label"] and card["selectionBehavior"] in ("at-most-one", "any")
        assert all(a["type"] in ("create", "update", "delete") for a in suggestion["actions"])
    for reason in card.get("overrideReasons", []):
        assert reason["code"] and reason["system"] and reason["display"]


# --- FHIR ----------------------------------------------------------------------------------

def test_fhir_bundle_gives_validated_detected_issues_implicating_the_orders(client):
    response = client.post("/v1/medication/risk/fhir", json=BUNDLE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["meta"]["tag"][0]["code"]
    issues = [DetectedIssue.model_validate(e["resource"]) for e in body["entry"]]
    implicated = {frozenset(r.reference for r in i.implicated): i for i in issues}
    interaction = implicated[frozenset({"MedicationRequest/m1", "MedicationStatement/m2"})]
    assert interaction.severity == "high" and interaction.code.coding[0].code == "DRG"
    allergy = implicated[frozenset({"MedicationRequest/m3"})]  # penicillin allergy, from Bundle
    assert allergy.code.coding[0].code == "ALGY" and allergy.patient.reference == "Patient/p1"
    assert not any("naproxen" in (i.detail or "") for i in issues)  # stopped: not reviewed


@pytest.mark.parametrize("payload, reason", [
    ({"resourceType": "Patient"}, "not a valid FHIR R4 Bundle"),
    ({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "status": "active"}}]}, "not a valid FHIR R4 Bundle"),
])
def test_invalid_fhir_gets_422_with_the_validation_reason(client, payload, reason):
    response = client.post("/v1/medication/risk/fhir", json=payload)
    assert response.status_code == 422 and reason in response.json()["reason"]


# --- CDS Hooks -----------------------------------------------------------------------------

def test_discovery_lists_order_select_and_order_sign_with_prefetch(client):
    services = client.get("/v1/cds-services").json()["services"]
    assert {(s["id"], s["hook"]) for s in services} == {(SELECT, "order-select"),
                                                         (SIGN, "order-sign")}
    for service in services:
        assert service["description"] and "{{context.patientId}}" in service["prefetch"]["patient"]


def test_order_sign_card_for_a_draft_against_current_medication(client):
    response = client.post(f"/v1/cds-services/{SIGN}", json=hook_request(
        "order-sign", [medication("MedicationRequest", "d1", "clarithromycin", status="draft")],
        [medication("MedicationRequest", "c1", "simvastatin")]))
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    assert_card_shape(card)
    assert card["indicator"] == "critical" and "clarithromycin" in card["summary"]
    action = card["suggestions"][0]["actions"][0]
    assert action == {"type": "delete", "description": "Cancel MedicationRequest/d1",
                      "resourceId": ["MedicationRequest/d1"]}


def test_alerts_not_involving_a_draft_and_minor_ones_are_suppressed(client, monkeypatch):
    request = hook_request(
        "order-select", [medication("MedicationRequest", "d1", "amlodipine", status="draft")],
        [medication("MedicationRequest", "c1", "carvedilol"),  # minor with amlodipine
         medication("MedicationRequest", "c2", "warfarin"),
         medication("MedicationRequest", "c3", "ibuprofen")],  # major, but no draft involved
        selections=["MedicationRequest/d1"])
    assert client.post(f"/v1/cds-services/{SELECT}", json=request).json()["cards"] == []
    monkeypatch.setenv("CLINASSIST_CDS_MIN_SEVERITY", "minor")
    (card,) = client.post(f"/v1/cds-services/{SELECT}", json=request).json()["cards"]
    assert card["indicator"] == "info"


def test_unknown_medication_gets_an_info_card_not_silence(client):
    cards = client.post(f"/v1/cds-services/{SIGN}", json=hook_request(
        "order-sign", [medication("MedicationRequest", "d1", "zzzunknown", status="draft")],
        [])).json()["cards"]
    assert [c["indicator"] for c in cards] == ["info"] and "zzzunknown" in cards[0]["summary"]


def test_feedback_is_stored_and_unknown_cards_are_refused(client):
    (card,) = client.post(f"/v1/cds-services/{SIGN}", json=hook_request(
        "order-sign", [medication("MedicationRequest", "d1", "ibuprofen", status="draft")],
        [medication("MedicationRequest", "c1", "warfarin")])).json()["cards"]
    reason = {"code": "patient-monitored", "system": "urn:clinassist:cds-override"}
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                              "overrideReason": {"reason": reason},
                              "outcomeTimestamp": "2026-11-22T13:00:00Z"}]}
    assert client.post(f"/v1/cds-services/{SIGN}/feedback", json=feedback).status_code == 200
    stored = client.app.state.cds_store.feedback_rows()
    assert stored[-1][:3] == (SIGN, card["uuid"], "overridden")
    feedback["feedback"][0]["card"] = "not-a-card"
    assert client.post(f"/v1/cds-services/{SIGN}/feedback", json=feedback).status_code == 404


@pytest.mark.parametrize("url, payload, status", [
    (f"/v1/cds-services/{SIGN}", {"hook": "order-select", "hookInstance": "x", "context": {}},
     422),
    (f"/v1/cds-services/{SIGN}", {"hook": "order-sign"}, 422),
    ("/v1/cds-services/nope", {}, 404),
    (f"/v1/cds-services/{SIGN}/feedback", {"feedback": [{"card": "x", "outcome": "maybe",
                                                         "outcomeTimestamp": "t"}]}, 422),
])
def test_bad_cds_requests_get_4xx(client, url, payload, status):
    response = client.post(url, json=payload)
    assert response.status_code == status and response.json()["reason"]
