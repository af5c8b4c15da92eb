"""Predicted interactions over HTTP: `clinassist serve` started with CLINASSIST_DDI_MODEL=1 (and
CDS cards from `minor` up), called as a pharmacist and as an EHR. A predicted alert says it is a
model prediction, carries P(interaction), the effect and its probability and the analogue
pairs, has severity unknown (FHIR low, CDS info), comes after every knowledge-base alert, and
never appears for a pair the knowledge base has a rule for; JSON, FHIR and CDS say the same."""

from __future__ import annotations

import httpx
import pytest

from service_process import start
from test_medication_fhir_cds import PATIENT, SIGN, hook_request, medication

LABEL = "model prediction, not in the knowledge base"
# A pair the ANSM knowledge base is silent on that DrugBank-86 lists (an S1 test pair, not
# seen in training: "may increase the orthostatic hypotensive activities") and the model
# flags; with a pair the KB covers and a harmless pair.
PREDICTED = ("esmolol", "tamsulosin")
KB_PAIR = ("warfarin", "ibuprofen")
HARMLESS = ("amoxicillin", "paracetamol")
# Two drugs outside DrugBank-86 whose nearest training drug has Tanimoto similarity < 0.3.
UNSEEN = ("lemborexant", "finerenone")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    running = start(tmp_path_factory.mktemp("ddi_service"),
                    env={"CLINASSIST_DDI_MODEL": "1", "CLINASSIST_CDS_MIN_SEVERITY": "minor"})
    yield running
    running.stop()


def review(service, *names, **options) -> dict:
    response = httpx.post(service.url + "/v1/medication/risk", timeout=60,
                          headers=service.headers("pharmacist"),
                          json={"medications": [{"name": n} for n in names], "options": options})
    assert response.status_code == 200, response.text
    return response.json()


def predicted(alerts: list[dict]) -> list[dict]:
    return [a for a in alerts if a["evidence"]["kind"] == "predicted"]


def test_a_predicted_alert_is_labelled_and_ranked_below_every_kb_alert(service):
    body = review(service, *PREDICTED, *KB_PAIR, *HARMLESS)
    alerts = body["alerts"]
    (alert,) = [a for a in predicted(alerts) if set(a["ingredients"]) == set(PREDICTED)]
    assert (alert["severity"], alert["fhir_severity"], alert["cds_indicator"]) == (
        "unknown", "low", "info")
    assert alert["evidence"]["label"] == LABEL and LABEL in alert["text"]
    prediction = alert["prediction"]
    assert 0.5 < prediction["p_interaction"] <= 1
    assert 0 < prediction["type_probability"] <= 1
    assert "esmolol" in prediction["effect"] and "tamsulosin" in prediction["effect"]
    assert prediction["analogues"] and all(len(a["drugs"]) == 2 for a in prediction["analogues"])
    last_fact = max(i for i, a in enumerate(alerts) if a["evidence"]["kind"] == "knowledge-base")
    first_prediction = min(i for i, a in enumerate(alerts) if a["evidence"]["kind"] == "predicted")
    assert last_fact < first_prediction
    kb_pairs = {frozenset(a["ingredients"]) for a in alerts
                if a["evidence"]["kind"] == "knowledge-base" and a["type"] == "interaction"}
    assert frozenset(KB_PAIR) in kb_pairs
    assert not {frozenset(a["ingredients"]) for a in predicted(alerts)} & kb_pairs
    assert not [a for a in predicted(alerts) if set(a["ingredients"]) == {"amoxicillin",
                                                                          "acetaminophen"}]
    assert "model_abstentions" not in body  # only with options.explain


def test_explain_says_why_the_model_kept_quiet(service):
    body = review(service, *HARMLESS, "zzqx-unknown", unresolved="report", explain=True)
    assert not predicted(body["alerts"])
    (withheld,) = body["model_abstentions"]
    assert set(withheld["ingredients"]) == {"amoxicillin", "acetaminophen"}
    assert withheld["reason"] == "below-threshold" and "threshold" in withheld["detail"]
    assert 0 <= withheld["p_interaction"] < 1


def test_explain_says_when_both_drugs_are_outside_the_applicability_domain(service):
    body = review(service, *UNSEEN, explain=True)
    assert not predicted(body["alerts"])
    (withheld,) = body["model_abstentions"]
    assert set(withheld["ingredients"]) == set(UNSEEN)
    assert withheld["reason"] == "outside-applicability-domain"
    assert "p_interaction" not in withheld  # not scored at all
    assert "applicability domain" in withheld["detail"] and "cut-off" in withheld["detail"]
    assert "model_abstentions" not in review(service, *UNSEEN)


def test_fhir_detected_issue_says_the_same(service):
    entries = [{"resource": PATIENT}] + [medication("MedicationRequest", f"m{i}", name)
                                         for i, name in enumerate(PREDICTED)]
    response = httpx.post(service.url + "/v1/medication/risk/fhir", timeout=60,
                          headers=service.headers("pharmacist"),
                          json={"resourceType": "Bundle", "type": "collection",
                                "entry": entries})
    assert response.status_code == 200, response.text
    issues = [e["resource"] for e in response.json()["entry"]
              if e["resource"]["resourceType"] == "DetectedIssue"]
    (issue,) = [i for i in issues if LABEL in i["detail"]]
    assert issue["severity"] == "low"
    evidence = [code["text"] for e in issue["evidence"] for code in e["code"]]
    assert LABEL in evidence[0] and "P(interaction)" in evidence[0]
    assert any(text.startswith("known interacting analogue") for text in evidence[1:])


def test_cds_card_is_info_and_says_model_prediction(service):
    request = hook_request("order-sign", [medication("MedicationRequest", "d1", PREDICTED[0],
                                                     status="draft")],
                           [medication("MedicationRequest", "c1", PREDICTED[1])])
    response = httpx.post(service.url + f"/v1/cds-services/{SIGN}", json=request, timeout=60,
                          headers=service.headers("pharmacist"))
    assert response.status_code == 200, response.text
    (card,) = [c for c in response.json()["cards"] if "model prediction" in c["summary"]]
    assert card["indicator"] == "info" and len(card["summary"]) < 140
    assert "Severity unknown" in card["detail"] and "analogue" in card["detail"]
