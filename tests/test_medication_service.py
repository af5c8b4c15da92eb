"""The pharmacist's API over HTTP against the started service: JSON, FHIR and CDS Hooks with a
JWT from a trusted issuer, through the shared auth and audit layer."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service_process import cli
from test_medication_fhir_cds import BUNDLE, SIGN, assert_card_shape, hook_request, medication

ISSUER = "https://ehr.test.invalid"
ISSUE_EXAMPLE = {
    "patient": {"age": 78, "sex": "female", "egfr": 38, "allergies": ["penicillin"],
                "conditions": ["heart failure"]},
    "medications": [{"name": "warfarin"}, {"name": "Advil", "dose": "400 mg", "route": "oral"},
                    {"rxnorm": "36567"}],
}
SEVERITY_ORDER = ["contraindicated", "major", "moderate", "minor"]


@pytest.fixture(scope="module")
def ehr_key(service, tmp_path_factory):
    """An EHR's ES384 key pair, its public half registered as a trusted pharmacist issuer."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = tmp_path_factory.mktemp("ehr") / "ehr.pem"
    pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    added = cli(service.home, "users", "trust-issuer", "--issuer", ISSUER, "--public-key", str(pem),
                "--role", "pharmacist")
    assert added.returncode == 0, added.stderr
    return key


def signed(key) -> dict:
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "sub": "ehr-client", "iat": now, "exp": now + 60,
                        "jti": str(uuid.uuid4())}, key, algorithm="ES384")
    return {"Authorization": f"Bearer {token}"}


def test_the_issue_example_returns_ranked_alerts_and_a_risk_score(service):
    response = httpx.post(service.url + "/v1/medication/risk", json=ISSUE_EXAMPLE, timeout=60,
                          headers=service.headers("pharmacist"))
    assert response.status_code == 200, response.text
    body = response.json()
    ranks = [SEVERITY_ORDER.index(alert["severity"]) for alert in body["alerts"]]
    assert ranks == sorted(ranks)
    bleeding = [a for a in body["alerts"] if a["type"] == "interaction"
                and {"warfarin", "ibuprofen"} <= set(a["ingredients"])]
    assert bleeding and bleeding[0]["severity"] in ("contraindicated", "major")
    assert bleeding[0]["evidence"]["kind"] == "knowledge-base"
    assert body["risk"]["gerontonet"]["components"] and body["knowledge_base"]["version"]


def test_unknown_drugs_get_422_with_suggestions(service):
    response = httpx.post(service.url + "/v1/medication/risk", timeout=60,
                          headers=service.headers("pharmacist"),
                          json={"patient": {"age": 60}, "medications": [{"name": "warfarine"},
                                                                         {"name": "zzqx"}]})
    assert response.status_code in (200, 422)
    if response.status_code == 422:
        assert "zzqx" in response.text
    else:
        assert [u["input"] for u in response.json()["unresolved"]] == ["zzqx"]


@pytest.mark.parametrize("role, status", [("pharmacist", 200), ("admin", 200),
                                          ("radiologist", 403), ("gateway", 403)])
def test_only_pharmacists_and_admins_review_medication(service, role, status):
    response = httpx.post(service.url + "/v1/medication/risk", json=ISSUE_EXAMPLE, timeout=60,
                          headers=service.headers(role))
    assert response.status_code == status


def test_fhir_bundle_in_detected_issues_out(service):
    response = httpx.post(service.url + "/v1/medication/risk/fhir", json=BUNDLE, timeout=60,
                          headers=service.headers("pharmacist"))
    assert response.status_code == 200, response.text
    issues = [e["resource"] for e in response.json()["entry"]]
    assert issues and all(r["resourceType"] == "DetectedIssue" for r in issues)


def test_cds_hooks_with_a_signed_jwt(service, ehr_key):
    services = httpx.get(service.url + "/v1/cds-services", headers=signed(ehr_key)).json()
    assert {s["hook"] for s in services["services"]} == {"order-select", "order-sign"}
    response = httpx.post(service.url + f"/v1/cds-services/{SIGN}", timeout=60,
                          headers=signed(ehr_key), json=hook_request(
        "order-sign", [medication("MedicationRequest", "d1", "clarithromycin", status="draft")],
        [medication("MedicationRequest", "c1", "simvastatin")]))
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert_card_shape(card)
    assert card["indicator"] == "critical"


def test_a_replayed_or_unsigned_jwt_is_refused(service, ehr_key):
    headers = signed(ehr_key)
    assert httpx.get(service.url + "/v1/cds-services", headers=headers).status_code == 200
    assert httpx.get(service.url + "/v1/cds-services", headers=headers).status_code == 401
    forged = jwt.encode({"iss": ISSUER, "iat": int(time.time()), "exp": int(time.time()) + 60,
                         "jti": "x"}, "secret", algorithm="HS256")
    assert httpx.get(service.url + "/v1/cds-services",
                     headers={"Authorization": f"Bearer {forged}"}).status_code == 401
