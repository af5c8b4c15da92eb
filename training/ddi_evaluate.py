"""Scores of the interaction model: existence (AUROC, AUPRC, false alarms at the threshold),
type (accuracy, macro-F1, kappa), the degree-only baseline beside each, and reliability
diagrams. `score_served` runs the model exactly as it is served: from the drug table
(float16 embeddings, nearest reference drugs), every pair in both orders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, cohen_kappa_score, f1_score, roc_auc_score

from clinassist.training.ddi_negatives import LabelledPairs, degree_features


@dataclass
class ServedTable:
    """What the bundle stores per drug, as float32 after float16 storage."""

    embeddings: np.ndarray
    neighbours: np.ndarray
    similarity: np.ndarray


def half(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).astype(np.float32)


def served_table(model, features: np.ndarray, neighbours: np.ndarray,
                 similarity: np.ndarray, batch: int = 2048) -> ServedTable:
    """Embeddings of every drug by the (half-precision) encoder, stored as float16."""
    with torch.no_grad():
        embedded = torch.cat([model.net.encoder(torch.from_numpy(features[i:i + batch]))
                              for i in range(0, len(features), batch)])
    return ServedTable(half(embedded.numpy()), neighbours.astype(np.int64), half(similarity))


@dataclass
class PairOutputs:
    """Per unordered pair asked: existence (logit or probability, mean of both orders), type
    scores of the pair in its given order (N, 86)."""

    existence: np.ndarray
    types: np.ndarray


def torch_logits(net, table: ServedTable, first: np.ndarray, second: np.ndarray,
                 batch: int = 4096) -> PairOutputs:
    """Raw logits through the network as served (for calibration on validation)."""
    existence, types = [], []
    with torch.no_grad():
        for i in range(0, len(first), batch):
            rows = np.concatenate([first[i:i + batch], second[i:i + batch]])
            terms = net.drug_terms(torch.from_numpy(table.embeddings[rows]))
            n = len(rows) // 2
            t1, t2 = terms[:n], terms[n:]
            nb = torch.from_numpy(table.neighbours[rows])
            sm = torch.from_numpy(table.similarity[rows])
            forward = net.pair(t1, t2, nb[:n], sm[:n], nb[n:], sm[n:])
            backward = net.pair(t2, t1, nb[n:], sm[n:], nb[:n], sm[:n])
            existence.append(((forward[0] + backward[0]) / 2).numpy())
            types.append(forward[1].numpy())
    return PairOutputs(np.concatenate(existence), np.concatenate(types))


def onnx_outputs(bundle, table: ServedTable, first: np.ndarray, second: np.ndarray,
                 batch: int = 2048) -> PairOutputs:
    """Calibrated probabilities from the bundle's ONNX graph, both orders in one call."""
    existence, types = [], []
    for i in range(0, len(first), batch):
        rows = np.unique(np.concatenate([first[i:i + batch], second[i:i + batch]]))
        a = np.searchsorted(rows, first[i:i + batch])
        b = np.searchsorted(rows, second[i:i + batch])
        out = bundle.run(embeddings=table.embeddings[rows], neighbours=table.neighbours[rows],
                         similarity=table.similarity[rows], first=np.concatenate([a, b]),
                         second=np.concatenate([b, a]))
        n = len(a)
        existence.append((out["p_interaction"][:n] + out["p_interaction"][n:]) / 2)
        types.append(out["type_probabilities"][:n])
    return PairOutputs(np.concatenate(existence), np.concatenate(types))


def existence_scores(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    flagged = probabilities >= threshold
    negatives, positives = labels == 0, labels == 1
    return {"positives": int(positives.sum()), "negatives": int(negatives.sum()),
            "auroc": float(roc_auc_score(labels, probabilities)),
            "auprc": float(average_precision_score(labels, probabilities)),
            "false_alarm_rate": float(flagged[negatives].mean()),
            "sensitivity": float(flagged[positives].mean()),
            "expected_calibration_error": expected_calibration_error(probabilities, labels)}


def type_scores(probabilities: np.ndarray, classes: np.ndarray) -> dict:
    predicted = probabilities.argmax(1)
    confidence = probabilities.max(1)
    return {"pairs": int(len(classes)), "accuracy": float(np.mean(predicted == classes)),
            "macro_f1": float(f1_score(classes, predicted, average="macro")),
            "cohen_kappa": float(cohen_kappa_score(classes, predicted)),
            "expected_calibration_error": expected_calibration_error(
                confidence, (predicted == classes).astype(int))}


def expected_calibration_error(probabilities: np.ndarray, outcomes: np.ndarray,
                               bins: int = 10) -> float:
    """Mean |observed rate - mean probability| over equal-width bins, weighted by size."""
    which = np.clip((probabilities * bins).astype(int), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(outcomes[inside].mean() - probabilities[inside].mean())
    return float(error)


@dataclass
class DegreeBaseline:
    """Logistic regression on the two drugs' degrees, fitted on a split's training pairs."""

    union_degree: np.ndarray
    training_degree: np.ndarray
    model: LogisticRegression

    @classmethod
    def fit(cls, union_degree: np.ndarray, training_degree: np.ndarray,
            train: LabelledPairs) -> DegreeBaseline:
        features = degree_features(union_degree, training_degree, train.first, train.second)
        return cls(union_degree, training_degree,
                   LogisticRegression(max_iter=1000).fit(features, train.label))

    def probabilities(self, pairs: LabelledPairs) -> np.ndarray:
        features = degree_features(self.union_degree, self.training_degree, pairs.first,
                                   pairs.second)
        return self.model.predict_proba(features)[:, 1]

    def scores(self, pairs: LabelledPairs) -> dict:
        p = self.probabilities(pairs)
        return {"auroc": float(roc_auc_score(pairs.label, p)),
                "auprc": float(average_precision_score(pairs.label, p))}


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(5, 4.5), dpi=110)


def save_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str,
                     xlabel: str, ylabel: str, bins: int = 10) -> None:
    """One reliability diagram: per named curve, observed rate against mean probability in
    equal-width bins (points drawn with at least 20 pairs)."""
    plt, fig, ax = _figure()
    for n, (name, (probabilities, outcomes)) in enumerate(curves.items()):
        which = np.clip((probabilities * bins).astype(int), 0, bins - 1)
        filled = [b for b in range(bins) if (which == b).sum() >= 20]
        ax.plot([probabilities[which == b].mean() for b in filled],
                [outcomes[which == b].mean() for b in filled], "o-", color=f"C{n}", label=name)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
