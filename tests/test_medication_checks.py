"""Normalisation, the four checks and the risk score, on the real knowledge base."""

from __future__ import annotations

import pytest

from clinassist.serving.medication.checks import Abstention, AbstentionReason, Prediction
from clinassist.serving.medication.errors import UnresolvedDrugs
from clinassist.serving.medication.kb import KnowledgeBase
from clinassist.serving.medication.normalise import MedicationInput as Med
from clinassist.serving.medication.patient import Patient
from clinassist.serving.medication.review import MedicationReview
from clinassist.serving.medication.severity import Severity


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    kb = KnowledgeBase.open(tmp_path_factory.getbasetemp() / "medication" / "kb.sqlite")
    return MedicationReview(kb)


def ingredients(review, **medication) -> list[str]:
    return [i.name for i in review.normaliser.resolve_all([Med(**medication)])[0].ingredients]


def alerts(review, *names, patient=Patient(), kind=None) -> list[dict]:
    found = review.run(patient, [Med(name=name) for name in names])["alerts"]
    return [a for a in found if kind is None or a["type"] == kind]


# --- normalisation -------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("Advil", ["ibuprofen"]), ("IBUPROFÈNE", ["ibuprofen"]), ("Coumadin", ["warfarin"]),
    ("metformin hydrochloride", ["metformin"]), ("Naproxen sodium", ["naproxen"]),
    ("paracetamol", ["acetaminophen"]), ("Tylenol", ["acetaminophen"]),
])
def test_names_brands_accents_and_salts_resolve_to_the_ingredient(review, name, expected):
    assert ingredients(review, name=name) == expected


def test_codes_resolve_rxnorm_ingredient_and_atc_level5(review):
    assert ingredients(review, rxnorm="36567") == ["simvastatin"]
    assert ingredients(review, atc="B01AA03") == ["warfarin"]


def test_combination_products_resolve_to_every_ingredient(review):
    assert ingredients(review, name="amoxicillin and clavulanic acid") == [
        "amoxicillin", "clavulanic acid"]
    assert ingredients(review, name="Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG "
                                    "Oral Tablet [Percocet]") == ["acetaminophen", "oxycodone"]


def test_misspelled_names_fail_with_suggestions_and_nothing_is_dropped(review):
    with pytest.raises(UnresolvedDrugs, match=r"2 medication\(s\) not found: 'ibuprofin' "
                                              r"\(did you mean: ibuprofen") as failure:
        review.normaliser.resolve_all([Med(name="ibuprofin"), Med(name="warfarin"),
                                       Med(rxnorm="999999999")])
    assert [f["index"] for f in failure.value.details] == [0, 2]
    assert failure.value.http_status == 422


def test_an_atc_class_code_is_not_a_drug(review):
    assert review.normaliser.resolve(Med(atc="M01AE")) is None


# --- interactions --------------------------------------------------------------------------

@pytest.mark.parametrize("first, second, severity", [
    ("warfarin", "ibuprofen", "major"),          # ANSM: association déconseillée
    ("warfarin", "aspirin", "contraindicated"),  # ANSM: CI at anti-inflammatory doses
    ("simvastatin", "clarithromycin", "contraindicated"),  # strong CYP3A4 inhibitor
])
def test_known_dangerous_pairs_have_the_right_severity(review, first, second, severity):
    (alert,) = alerts(review, first, second, kind="interaction")
    assert alert["severity"] == severity
    assert alert["evidence"] == {"kind": "knowledge-base", "source": "ansm-2020-10"}
    assert alert["mechanism"] and alert["language"] == "fr"


def test_dose_dependent_rule_lists_each_level_with_its_condition(review):
    (alert,) = alerts(review, "warfarin", "aspirin", kind="interaction")
    assert [level["label"] for level in alert["levels"]] == [
        "contraindication", "combination not recommended", "to be taken into account"]
    assert "depends on dose" in alert["text"]


@pytest.mark.parametrize("pair", [("amoxicillin", "acetaminophen"), ("lisinopril", "amlodipine")])
def test_known_non_interacting_pairs_stay_silent(review, pair):
    assert alerts(review, *pair) == []


def test_predictor_is_asked_only_about_pairs_without_a_kb_rule(review):
    asked = []

    class Stub:
        def predict(self, pairs):
            asked.append([{a.name, b.name} for a, b in pairs])
            return [Prediction(0.9, "may interact (stub)", 0.5, (), "stub-1") for _ in pairs]

    stubbed = MedicationReview(review.kb, predictor=Stub())
    found = stubbed.run(Patient(), [Med(name="amoxicillin"), Med(name="acetaminophen"),
                                    Med(name="warfarin"), Med(name="ibuprofen")])["alerts"]
    (once,) = asked  # one call for the whole list
    assert {"warfarin", "ibuprofen"} not in once and {"amoxicillin", "acetaminophen"} in once
    predicted = [a for a in found if a["evidence"]["kind"] == "predicted"]
    assert predicted and all(a["evidence"]["confidence"] == 0.9 for a in predicted)
    assert all(a["severity"] == "unknown" for a in predicted)
    first_predicted = found.index(predicted[0])
    assert all(a["evidence"]["kind"] == "knowledge-base" for a in found[:first_predicted])


def test_abstentions_are_listed_only_when_asked(review):
    class Quiet:
        def predict(self, pairs):
            return [Abstention(AbstentionReason.BELOW_THRESHOLD, "stub: too unlikely", 0.1)
                    for _ in pairs]

    quiet = MedicationReview(review.kb, predictor=Quiet())
    medications = [Med(name="amoxicillin"), Med(name="acetaminophen")]
    assert "model_abstentions" not in quiet.run(Patient(), medications)
    (withheld,) = quiet.run(Patient(), medications, explain=True)["model_abstentions"]
    assert withheld == {"drugs": ["amoxicillin", "acetaminophen"],
                        "ingredients": ["amoxicillin", "acetaminophen"],
                        "reason": "below-threshold", "detail": "stub: too unlikely",
                        "p_interaction": 0.1}


# --- duplicate therapy ---------------------------------------------------------------------

def test_two_nsaids_of_one_atc_class_are_a_duplicate(review):
    (alert,) = alerts(review, "ibuprofen", "naproxen", kind="duplicate")
    assert alert["severity"] == "moderate" and alert["atc_classes"] == ["M01AE"]


def test_one_nsaid_is_not_a_duplicate(review):
    assert alerts(review, "ibuprofen", "acetaminophen", kind="duplicate") == []


def test_same_ingredient_under_two_names_is_a_duplicate(review):
    (alert,) = alerts(review, "Advil", "ibuprofen", kind="duplicate")
    assert alert["severity"] == "major" and alert["ingredients"] == ["ibuprofen"]


# --- renal ---------------------------------------------------------------------------------

@pytest.mark.parametrize("egfr, severity", [
    (25, "contraindicated"), (40, "moderate"), (45, None), (90, None), (None, None)])
def test_metformin_renal_rule_fires_only_below_its_cut_offs(review, egfr, severity):
    found = alerts(review, "metformin", patient=Patient(egfr=egfr), kind="renal")
    assert [a["severity"] for a in found] == ([severity] if severity else [])
    if found:
        assert "Glucophage" in found[0]["evidence"]["source"]


def test_crcl_based_rules_say_egfr_is_a_proxy(review):
    (alert,) = alerts(review, "gabapentin", patient=Patient(egfr=50), kind="renal")
    assert "proxy" in alert["text"] and alert["measure"] == "CrCl"


# --- allergy -------------------------------------------------------------------------------

def test_penicillin_allergy_matches_amoxicillin_by_class(review):
    (alert,) = alerts(review, "amoxicillin", "clarithromycin",
                      patient=Patient(allergies=("Penicillin",)), kind="allergy")
    assert alert["severity"] == "major" and alert["match"] == "class"
    assert alert["drugs"] == ["amoxicillin"]


def test_allergy_to_a_member_extends_to_its_class_and_matches_itself(review):
    found = alerts(review, "amoxicillin", "Penicillin V Potassium 250 MG Oral Tablet",
                   patient=Patient(allergies=("amoxicillin",)), kind="allergy")
    assert {(a["ingredients"][0], a["match"]) for a in found} == {
        ("amoxicillin", "ingredient"), ("phenoxymethylpenicillin", "class")}


def test_non_drug_allergies_are_listed_as_unchecked(review):
    result = review.run(Patient(allergies=("Peanut (substance)",)), [Med(name="warfarin")])
    assert result["unchecked_allergies"] == ["Peanut (substance)"]


# --- ranking and risk score ----------------------------------------------------------------

def test_alerts_are_sorted_most_severe_first(review):
    found = alerts(review, "warfarin", "aspirin", "ibuprofen", "naproxen", "metformin",
                   patient=Patient(egfr=40))
    ranks = [Severity.parse(a["severity"]) for a in found]
    assert ranks == sorted(ranks, reverse=True) and len(found) >= 5


def test_gerontonet_components_follow_onder_2010(review):
    patient = Patient(age=78, egfr=38, conditions=("Heart failure", "cirrhosis of liver",
                                                   "diabetes", "gout"), previous_adr=True)
    risk = review.run(patient, [Med(name=n) for n in (
        "warfarin", "ibuprofen", "metformin", "amlodipine", "lisinopril", "simvastatin",
        "acetaminophen", "omeprazole")])["risk"]
    points = {c["name"]: c["points"] for c in risk["gerontonet"]["components"]}
    assert points == {">=4 conditions": 1, "heart failure": 1, "liver disease": 1,
                      "number of drugs (<5: 0, 5-7: 1, >=8: 4)": 4, "previous ADR": 2,
                      "renal failure (eGFR < 60)": 1}
    assert risk["gerontonet"]["score"] == 10
    assert risk["interaction_burden"]["counts"]["major"] >= 1


def test_unstated_components_score_zero_and_say_so(review):
    risk = review.run(Patient(), [Med(name="warfarin")])["risk"]["gerontonet"]
    assert risk["score"] == 0
    assert {c["name"] for c in risk["components"] if not c["known"]} == {
        "previous ADR", "renal failure (eGFR < 60)"}


def test_one_alert_per_product_pair_and_rule(review):
    """ANSM's PIPÉRACILLINE/TAZOBACTAM + VANCOMYCINE rule fires once, not per ingredient."""
    found = review.run(Patient(), [Med(name="piperacillin 4000 MG / tazobactam 500 MG Injection"),
                                   Med(name="vancomycin")])["alerts"]
    assert [a["type"] for a in found] == ["interaction"]
