"""The interaction-type network: an MLP over the ordered pair of drug fingerprints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DdiNet(nn.Module):
    """[fp(drug1), fp(drug2)] -> hidden layers (ReLU, dropout) -> one logit per interaction
    type. The order matters: the types are directional."""

    def __init__(self, bits: int, hidden: tuple[int, ...], classes: int, dropout: float,
                 class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        layers, width = [], 2 * bits
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(*layers, nn.Linear(width, classes))
        self.register_buffer("class_weights", class_weights, persistent=False)

    def logits(self, drug1: torch.Tensor, drug2: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([drug1, drug2], dim=1))

    def forward(self, drug1: torch.Tensor, drug2: torch.Tensor,
                labels: torch.Tensor | None = None) -> dict:
        out = {"logits": self.logits(drug1, drug2)}
        if labels is not None:
            out["loss"] = F.cross_entropy(out["logits"], labels, weight=self.class_weights)
        return out


class DdiProbabilities(nn.Module):
    """The exported graph: two fingerprint batches in, softmax over the 86 types out."""

    def __init__(self, net: DdiNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, drug1: torch.Tensor, drug2: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net.logits(drug1, drug2), dim=1)
