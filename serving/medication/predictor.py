"""The DrugBank-86 interaction model behind the `InteractionPredictor` seam (ONNX Runtime only).

Asked only about pairs the knowledge base has no rule for. It answers when both ingredients
are among the model's 1,704 DrugBank drugs and its confidence reaches the bundle's threshold
(chosen on validation); the answer is the interaction-type sentence, labelled `predicted` by
the checker. The model is trained on non-commercial DrugBank data (CC BY-NC 4.0).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from clinassist.bundle import Bundle
from clinassist.serving.medication.checks import Prediction
from clinassist.serving.medication.kb import Ingredient
from clinassist.serving.medication.severity import Severity
from clinassist.serving.medication.text import fold, strip_salt

BUNDLE_NAME = "ddi_drugbank86"


class DrugBankPredictor:
    """`severity` is what a predicted alert is ranked as: DrugBank-86 types carry no severity,
    so by default a prediction is `minor` (shown in reviews, below the default CDS card tier)."""

    def __init__(self, bundle: Bundle | str | Path = BUNDLE_NAME,
                 severity: Severity = Severity.MINOR) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, threads=1)
        meta = self.bundle.metadata
        self.severity = severity
        self.threshold = float(meta["threshold"]["value"])
        self.classes = meta["classes"]
        self.model = f"{meta['name']} {meta['version']}"
        bits = meta["network_data_format"]["inputs"]["drug1"]["shape"][1]
        with np.load(self.bundle.path / meta["fingerprints"]["file"]) as stored:
            self.row = {str(drug): i for i, drug in enumerate(stored["drugbank_ids"])}
            unpacked = np.unpackbits(stored["packed_bits"], axis=1)[:, :bits]
        self.fingerprints = unpacked.astype(np.float32)
        names = json.loads((self.bundle.path / meta["drug_names"]["file"]).read_text())
        self.drug_by_name = {fold(name): drug for name, drug in names.items()}
        self._scored = lru_cache(maxsize=65536)(self._score)

    def drugbank_id(self, ingredient: Ingredient) -> str | None:
        folded = fold(ingredient.name)
        return self.drug_by_name.get(folded) or self.drug_by_name.get(strip_salt(folded))

    def predict(self, a: Ingredient, b: Ingredient) -> Prediction | None:
        first, second = self.drugbank_id(a), self.drugbank_id(b)
        if first is None or second is None or first == second:
            return None
        forward, label, confidence = self._scored(first, second)
        if confidence < self.threshold:
            return None
        names = (a.name, b.name) if forward else (b.name, a.name)
        return Prediction(self.severity, round(confidence, 3),
                          sentence(self.classes[label], *names), self.model)

    def _score(self, first: str, second: str) -> tuple[bool, int, float]:
        """Both orders scored (the types are directional); the more confident one:
        (is it first-then-second, type index, confidence)."""
        i, j = self.row[first], self.row[second]
        fp = self.fingerprints
        probabilities = self.bundle.run(drug1=fp[[i, j]], drug2=fp[[j, i]])["probabilities"]
        order, label = np.unravel_index(int(probabilities.argmax()), probabilities.shape)
        return bool(order == 0), int(label), float(probabilities[order, label])


def sentence(interaction_type: dict, first: str, second: str) -> str:
    """The type's sentence about the ordered pair (first, second) as the model saw it."""
    drug1, drug2 = (second, first) if interaction_type["first_is_drug2"] else (first, second)
    return interaction_type["sentence"].replace("#Drug1", drug1).replace("#Drug2", drug2)
