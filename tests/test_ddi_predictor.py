"""The interaction model behind the checker's seam: one ONNX call per list, an answer only
above the threshold and inside the applicability domain, a clear abstention otherwise, labelled
`predicted`, never for a pair the knowledge base covers."""

import numpy as np
import pytest

from clinassist.serving.medication.checks import Abstention, AbstentionReason, Prediction
from clinassist.serving.medication.kb import Ingredient, KnowledgeBase
from clinassist.serving.medication.normalise import MedicationInput as Med
from clinassist.serving.medication.patient import Patient
from clinassist.serving.medication.predictor import DrugBankPredictor, sentence
from clinassist.serving.medication.review import MedicationReview


def ingredient(name: str, i: int = 0) -> Ingredient:
    return Ingredient(i, name, None)


@pytest.fixture(scope="module")
def predictor():
    return DrugBankPredictor()


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    return KnowledgeBase.open(tmp_path_factory.getbasetemp() / "medication" / "kb.sqlite")


class Forced:
    """Both thresholds at 0: the model answers for every pair it can score."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.saved = (predictor.threshold, predictor.threshold_unseen)

    def __enter__(self):
        self.predictor.threshold = self.predictor.threshold_unseen = 0.0
        return self.predictor

    def __exit__(self, *exc):
        self.predictor.threshold, self.predictor.threshold_unseen = self.saved


class CountingRuns:
    """Wraps the bundle's `run` to count ONNX calls."""

    def __init__(self, predictor):
        self.predictor, self.calls = predictor, 0
        self.run = predictor.bundle.run

    def __enter__(self):
        def counted(**inputs):
            self.calls += 1
            return self.run(**inputs)

        self.predictor.bundle.run = counted
        return self

    def __exit__(self, *exc):
        self.predictor.bundle.run = self.run


def outside_drugs(predictor, count=2) -> list[str]:
    """Names of drugs whose nearest training drug is below the domain cut-off."""
    t = predictor.table
    rows = np.flatnonzero(t.nearest_similarity < predictor.domain_cut_off - 0.05)
    names = {row: name for name, row in predictor.row_by_name.items()}
    return [names[r] for r in rows if r in names][:count]


def test_all_pairs_of_a_list_are_scored_in_one_onnx_call(predictor):
    names = ["warfarin", "ibuprofen", "omeprazole", "simvastatin", "clarithromycin",
             "metformin", "amlodipine", "sertraline", "digoxin", "amiodarone"]
    pairs = [(ingredient(a), ingredient(b)) for i, a in enumerate(names) for b in names[i + 1:]]
    with CountingRuns(predictor) as counter:
        answers = predictor.predict(pairs)
    assert counter.calls == 1 and len(answers) == 45
    assert all(isinstance(a, (Prediction, Abstention)) for a in answers)


def test_a_drug_without_a_known_structure_gets_an_unknown_structure_abstention(predictor):
    (answer,) = predictor.predict([(ingredient("warfarin"), ingredient("not a drug at all"))])
    assert answer.reason is AbstentionReason.UNKNOWN_STRUCTURE
    assert "not a drug at all" in answer.detail


def test_two_drugs_far_from_every_training_drug_are_outside_the_domain(predictor):
    far = outside_drugs(predictor)
    assert len(far) == 2, "the drug table should hold drugs outside the domain"
    (answer,) = predictor.predict([(ingredient(far[0]), ingredient(far[1]))])
    assert answer.reason is AbstentionReason.OUTSIDE_DOMAIN
    assert f"{predictor.domain_cut_off:.2f}" in answer.detail
    # one training drug is enough to be inside
    (answer,) = predictor.predict([(ingredient(far[0]), ingredient("warfarin"))])
    assert not (isinstance(answer, Abstention)
                and answer.reason is AbstentionReason.OUTSIDE_DOMAIN)


def test_below_the_threshold_the_model_abstains_with_its_probability(predictor):
    pair = [(ingredient("amoxicillin"), ingredient("acetaminophen"))]
    (answer,) = predictor.predict(pair)
    assert answer.reason is AbstentionReason.BELOW_THRESHOLD
    assert 0 <= answer.p_interaction < predictor.threshold


def test_a_prediction_carries_probabilities_an_effect_and_analogues(predictor):
    with Forced(predictor):
        (answer,) = predictor.predict([(ingredient("simvastatin"), ingredient("clarithromycin"))])
    assert isinstance(answer, Prediction)
    assert 0 < answer.p_interaction <= 1 and 0 < answer.type_probability <= 1
    assert "simvastatin" in answer.effect and "clarithromycin" in answer.effect
    assert "#Drug" not in answer.effect
    assert answer.analogues and all(0 < a.similarity <= 1 for a in answer.analogues)
    assert answer.model.startswith("ddi_drugbank86 ")


def test_probability_does_not_depend_on_the_order_asked(predictor):
    a, b = ingredient("sertraline"), ingredient("tramadol")
    with Forced(predictor):
        forward, backward = predictor.predict([(a, b), (b, a)])
    assert forward.p_interaction == pytest.approx(backward.p_interaction, abs=1e-3)


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


def test_amoxicillin_and_paracetamol_get_no_predicted_alert(kb, predictor):
    result = MedicationReview(kb, predictor).run(
        Patient(), [Med(name="amoxicillin"), Med(name="paracetamol")], explain=True)
    assert result["alerts"] == []
    (withheld,) = result["model_abstentions"]
    assert withheld["reason"] == "below-threshold"
    assert withheld["p_interaction"] < predictor.threshold


def test_a_kb_covered_pair_never_gets_a_predicted_alert(kb, predictor):
    with Forced(predictor):  # the model would alert on every pair it can score
        result = MedicationReview(kb, predictor).run(
            Patient(), [Med(name=n) for n in ("warfarin", "ibuprofen", "omeprazole",
                                               "simvastatin", "clarithromycin")])
    interactions = [a for a in result["alerts"] if a["type"] == "interaction"]
    facts = {frozenset(a["ingredients"]) for a in interactions
             if a["evidence"]["kind"] == "knowledge-base"}
    predicted = [a for a in interactions if a["evidence"]["kind"] == "predicted"]
    assert facts and predicted
    assert {frozenset(a["ingredients"]) for a in predicted}.isdisjoint(facts)
    # ranked below every knowledge-base alert, severity unknown, tiered low / info
    kinds = [a["evidence"]["kind"] for a in result["alerts"]]
    assert kinds == sorted(kinds, key=lambda k: k == "predicted")
    for alert in predicted:
        assert (alert["severity"], alert["fhir_severity"], alert["cds_indicator"]) == (
            "unknown", "low", "info")
        assert alert["evidence"]["label"] == "model prediction, not in the knowledge base"
        assert alert["prediction"]["p_interaction"] == alert["evidence"]["confidence"]
