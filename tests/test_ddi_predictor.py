"""The interaction model behind the checker's seam: answers only above its threshold, only for
drugs it knows, labelled `predicted`, and never for a pair the knowledge base covers."""

import pytest

from clinassist.serving.medication.kb import Ingredient, KnowledgeBase
from clinassist.serving.medication.normalise import MedicationInput as Med
from clinassist.serving.medication.patient import Patient
from clinassist.serving.medication.predictor import DrugBankPredictor, sentence
from clinassist.serving.medication.review import MedicationReview
from clinassist.serving.medication.severity import Severity

WARFARIN, IBUPROFEN = Ingredient(1, "warfarin", None), Ingredient(2, "ibuprofen", None)


@pytest.fixture
def predictor():
    return DrugBankPredictor()


def test_predicts_above_the_threshold_and_abstains_below(predictor):
    predictor.threshold = 0.0
    prediction = predictor.predict(WARFARIN, IBUPROFEN)
    assert prediction.severity == Severity.MINOR
    assert 0 < prediction.confidence <= 1
    assert "warfarin" in prediction.text and "ibuprofen" in prediction.text
    assert "#Drug" not in prediction.text
    assert prediction.model.startswith("ddi_drugbank86 ")
    predictor.threshold = prediction.confidence + 0.01
    assert predictor.predict(WARFARIN, IBUPROFEN) is None


def test_unknown_drugs_and_the_same_drug_get_no_prediction(predictor):
    predictor.threshold = 0.0
    assert predictor.predict(WARFARIN, Ingredient(3, "not a drug at all", None)) is None
    assert predictor.predict(WARFARIN, Ingredient(4, "Warfarin sodium", None)) is None


def test_sentence_puts_each_drug_where_the_type_says():
    about_second = {"sentence": "The serum concentration of #Drug2 can be increased when it is "
                                "combined with #Drug1.", "first_is_drug2": True}
    assert sentence(about_second, "midazolam", "ketoconazole") == (
        "The serum concentration of midazolam can be increased when it is combined with "
        "ketoconazole.")
    about_first = {"sentence": "#Drug1 may increase the anticoagulant activities of #Drug2.",
                   "first_is_drug2": False}
    assert sentence(about_first, "aspirin", "warfarin") == (
        "aspirin may increase the anticoagulant activities of warfarin.")


def test_review_labels_predictions_and_keeps_kb_facts_apart(tmp_path_factory, predictor):
    kb = KnowledgeBase.open(tmp_path_factory.getbasetemp() / "medication" / "kb.sqlite")
    predictor.threshold = 0.0
    alerts = MedicationReview(kb, predictor).run(
        Patient(), [Med(name=n) for n in ("warfarin", "ibuprofen", "omeprazole")])["alerts"]
    interactions = [a for a in alerts if a["type"] == "interaction"]
    predicted = [a for a in interactions if a["evidence"]["kind"] == "predicted"]
    facts = [a for a in interactions if a["evidence"]["kind"] == "knowledge-base"]
    assert facts and predicted
    assert {frozenset(a["ingredients"]) for a in predicted}.isdisjoint(
        frozenset(a["ingredients"]) for a in facts)
    assert all(a["evidence"]["source"].startswith("ddi_drugbank86") and
               0 < a["evidence"]["confidence"] <= 1 for a in predicted)
