"""The interaction model behind the checker's `InteractionPredictor` seam (ONNX Runtime only).

Asked once per medication list about the ingredient pairs the knowledge base has no rule
for. For each pair it answers with a `Prediction` (P(interaction) at or above the bundle's
threshold, the most probable effect, the nearest known interacting analogue pairs) or an
`Abstention` saying why not:

- `unknown-structure`: an ingredient is not in the bundle's drug table (no structure known);
- `outside-applicability-domain`: neither drug has a training drug within the bundle's
  similarity cut-off, where validation showed the model ranks no better than chance allows;
- `below-threshold`: P(interaction) under the threshold chosen on validation negatives for a
  false-alarm rate <= 5 % (one for pairs of two training drugs, one for pairs with a drug
  the model never saw).

All pairs of a list go through one ONNX call. The drug table (`drugs.npz`: learned embeddings
of every drug with a structure, its nearest training drugs) is precomputed, so serving needs
no RDKit. The models are trained on non-commercial data (see each bundle's licence).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinassist.bundle import Bundle
from clinassist.serving.medication.checks import (
    Abstention,
    AbstentionReason,
    Analogue,
    Prediction,
)
from clinassist.serving.medication.kb import Ingredient
from clinassist.serving.medication.text import fold, strip_salt

BUNDLE_NAME = "ddi_drugbank86"
TABLE_FILE = "drugs.npz"
NAMES_FILE = "drug_names.json"
OUTPUTS = ("p_interaction", "type_probabilities", "analogue_first", "analogue_second",
           "analogue_similarity")
ANALOGUES_SHOWN = 3


@dataclass
class DrugTable:
    """Per drug (row): embedding, nearest reference drugs and their similarity, identity."""

    embeddings: np.ndarray  # (drugs, embedding) float32
    neighbours: np.ndarray  # (drugs, k) int64 reference indices
    similarity: np.ndarray  # (drugs, k) float32; a reference drug's own list starts with it
    references: np.ndarray  # (references,) rows of the reference (training) drugs
    keys: list[str]  # DrugBank ID or vocab:<canonical name>
    names: list[str]

    @property
    def nearest_similarity(self) -> np.ndarray:
        """Per drug, the similarity of its closest training drug (1 for a training drug)."""
        return self.similarity[:, 0]

    def reference_name(self, index: int) -> str:
        return self.names[int(self.references[index])]


def read_table(folder: Path) -> DrugTable:
    with np.load(folder / TABLE_FILE) as stored:
        return DrugTable(stored["embeddings"].astype(np.float32),
                         stored["neighbours"].astype(np.int64),
                         stored["similarity"].astype(np.float32),
                         stored["references"].astype(np.int64),
                         [str(k) for k in stored["keys"]], [str(n) for n in stored["names"]])


def read_names(folder: Path) -> dict[str, int]:
    """Folded name, synonym or brand -> drug row."""
    return json.loads((folder / NAMES_FILE).read_text())


@dataclass
class Scores:
    """The graph's outputs for ordered pairs (both orders of each asked pair, interleaved)."""

    p_interaction: np.ndarray
    type_probabilities: np.ndarray
    analogue_first: np.ndarray
    analogue_second: np.ndarray
    analogue_similarity: np.ndarray


class DrugBankPredictor:
    """The bundle's model, threshold and applicability domain behind the predictor seam."""

    def __init__(self, bundle: Bundle | str | Path = BUNDLE_NAME) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, threads=1)
        meta = self.bundle.metadata
        self.threshold = float(meta["threshold"]["value"])
        self.threshold_unseen = float(meta["threshold_unseen"]["value"])
        self.domain_cut_off = float(meta["applicability_domain"]["cut_off"])
        self.classes = meta["classes"]
        self.model = f"{meta['name']} {meta['version']}"
        self.table = read_table(self.bundle.path)
        self.row_by_name = read_names(self.bundle.path)
        self.trained_on = np.zeros(len(self.table.keys), dtype=bool)
        self.trained_on[self.table.references] = True

    def drug_row(self, ingredient: Ingredient) -> int | None:
        for name in (ingredient.name, ingredient.ansm_name):
            if name:
                folded = fold(name)
                row = self.row_by_name.get(folded, self.row_by_name.get(strip_salt(folded)))
                if row is not None:
                    return row
        return None

    def score(self, rows: list[int], pairs: list[tuple[int, int]]) -> Scores:
        """One ONNX call: every pair (indices into `rows`) in both orders."""
        t = self.table
        drugs = np.array(rows)
        first = np.array([i for a, b in pairs for i in (a, b)], dtype=np.int64)
        second = np.array([j for a, b in pairs for j in (b, a)], dtype=np.int64)
        out = self.bundle.run(embeddings=t.embeddings[drugs], neighbours=t.neighbours[drugs],
                              similarity=t.similarity[drugs], first=first, second=second)
        return Scores(*(out[name] for name in OUTPUTS))

    def predict(self, pairs: list[tuple[Ingredient, Ingredient]]
                ) -> list[Prediction | Abstention]:
        answers: list[Prediction | Abstention | None] = [None] * len(pairs)
        rows: dict[int, int] = {}  # drug row -> index among the list's drugs
        to_score: list[tuple[int, bool, tuple[int, int]]] = []
        for n, (a, b) in enumerate(pairs):
            row_a, row_b = self.drug_row(a), self.drug_row(b)
            unknown = [i.name for i, row in ((a, row_a), (b, row_b)) if row is None]
            if unknown:
                answers[n] = Abstention(AbstentionReason.UNKNOWN_STRUCTURE,
                                        f"no structure known for {', '.join(unknown)}: the "
                                        "model cannot score this pair")
            elif (nearest := max(self.table.nearest_similarity[[row_a, row_b]])) \
                    < self.domain_cut_off:
                answers[n] = Abstention(
                    AbstentionReason.OUTSIDE_DOMAIN,
                    f"neither {a.name} nor {b.name} is close enough to a training drug "
                    f"(structural similarity {nearest:.2f}, cut-off {self.domain_cut_off:.2f}): "
                    "outside the model's applicability domain")
            else:
                seen = bool(self.trained_on[row_a] and self.trained_on[row_b])
                to_score.append((n, seen, (rows.setdefault(row_a, len(rows)),
                                           rows.setdefault(row_b, len(rows)))))
        if to_score:
            scores = self.score(list(rows), [pair for _, _, pair in to_score])
            for order, (n, seen, _) in enumerate(to_score):
                answers[n] = self.answer(pairs[n], scores, 2 * order, seen)
        return answers  # type: ignore[return-value]

    def answer(self, pair: tuple[Ingredient, Ingredient], scores: Scores, at: int,
               seen: bool) -> Prediction | Abstention:
        """The answer for one pair from its two ordered rows `at` and `at + 1`; `seen`: both
        drugs are training drugs (each kind of pair has its own threshold)."""
        p = round(float(scores.p_interaction[at:at + 2].mean()), 3)
        threshold = self.threshold if seen else self.threshold_unseen
        if p < threshold:
            kind = "two training drugs" if seen else "a drug the model never saw"
            return Abstention(AbstentionReason.BELOW_THRESHOLD,
                              f"P(interaction) {p:.3f} is under the threshold {threshold:.3f} "
                              f"for pairs of {kind} (false-alarm rate <= 5 % on validation "
                              "negatives)", p)
        types = scores.type_probabilities[at:at + 2]
        order, label = np.unravel_index(int(types.argmax()), types.shape)
        a, b = pair if order == 0 else pair[::-1]
        return Prediction(p, sentence(self.classes[label], a.name, b.name),
                          round(float(types[order, label]), 3),
                          self.analogues(scores, at), self.model)

    def analogues(self, scores: Scores, at: int) -> tuple[Analogue, ...]:
        shown: dict[frozenset, Analogue] = {}
        for c, d, similarity in zip(scores.analogue_first[at], scores.analogue_second[at],
                                    scores.analogue_similarity[at]):
            names = (self.table.reference_name(c), self.table.reference_name(d))
            if similarity > 0 and frozenset(names) not in shown:
                shown[frozenset(names)] = Analogue(*names, round(float(similarity), 3))
        return tuple(shown.values())[:ANALOGUES_SHOWN]


def sentence(interaction_type: dict, first: str, second: str) -> str:
    """The type's sentence about the ordered pair (first, second) as the model saw it."""
    drug1, drug2 = (second, first) if interaction_type["first_is_drug2"] else (first, second)
    return interaction_type["sentence"].replace("#Drug1", drug1).replace("#Drug2", drug2)
