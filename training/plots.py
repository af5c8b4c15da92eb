"""ROC curve, calibration curve and confusion matrix as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from clinassist.training.metrics import confusion, roc_points


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(4.5, 4.5), dpi=110)


def save_roc(probabilities: np.ndarray, targets: np.ndarray, threshold: float, path: Path,
             title: str) -> None:
    plt, fig, ax = _figure()
    fpr, tpr = roc_points(probabilities, targets)
    flagged = probabilities >= threshold
    ax.plot(fpr, tpr, color="C0", label="ROC")
    ax.plot(np.mean(flagged[targets == 0]), np.mean(flagged[targets == 1]), "o", color="C3",
            label=f"operating point (t={threshold:.2f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC, {title}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_calibration(probabilities: np.ndarray, targets: np.ndarray, path: Path, title: str,
                     bins: int = 10) -> None:
    plt, fig, ax = _figure()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    filled = [b for b in range(bins) if np.any(which == b)]
    ax.plot([probabilities[which == b].mean() for b in filled],
            [targets[which == b].mean() for b in filled], "o-", color="C0", label="model")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.set(xlabel="predicted probability", ylabel="observed pneumonia rate",
           title=f"Calibration, {title}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_confusion(probabilities: np.ndarray, targets: np.ndarray, threshold: float,
                   path: Path, title: str) -> None:
    plt, fig, ax = _figure()
    c = confusion(probabilities, targets, threshold)
    matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black", fontsize=14)
    ax.set_xticks([0, 1], ["routine", "urgent"])
    ax.set_yticks([0, 1], ["normal", "pneumonia"])
    ax.set(xlabel="flag", ylabel="truth", title=f"{title}: threshold {threshold:.2f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_evaluation_plots(probabilities: np.ndarray, targets: np.ndarray, threshold: float,
                          folder: Path, title: str, prefix: str = "") -> None:
    """`{prefix}roc.png`, `{prefix}calibration.png` and `{prefix}confusion.png` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    save_roc(probabilities, targets, threshold, folder / f"{prefix}roc.png", title)
    save_calibration(probabilities, targets, folder / f"{prefix}calibration.png", title)
    save_confusion(probabilities, targets, threshold, folder / f"{prefix}confusion.png", title)
