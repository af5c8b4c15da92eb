"""The interaction network: does a pair interact, and if so, how (one of the 86 types).

Per drug: an embedding of its structure (`encoder` over the `ddi_features` vector) and its `k`
nearest reference drugs (indices, Tanimoto similarities). The reference interaction table `T`
(references x references, uint8: 0 nothing listed, t + 1 for DrugBank-86 type t with the row
drug first, 87 listed by DDInter or ANSM without a DrugBank-86 type) holds the training
positives; it is a buffer, so the exported graph carries it. Each reference drug also has a
learned *identity* vector; a drug's identity is the similarity-weighted mean of its
neighbours' (its own, for a training drug), so that what the model learns about one training
drug carries over to its close analogues.

For an ordered pair (a, b) the *analogue grid* pairs each neighbour c of a with each neighbour
d of b, with similarity W = min(sim(a, c), sim(b, d)). Analogue pairs that interact are the
evidence: the best W of interacting analogue pairs ("known interacting analogues"), and per
type the best W of an analogue pair of that type, in the pair's order and reversed. This is
similarity-based inference (Vilar et al. 2012) given as fixed features to two heads beside the
learned embeddings:

- `existence`: one logit, symmetric in (a, b) by construction (sums, products, sorted values);
- `types`: 86 logits for the ordered pair (the types are directional).

Each head's first layer is split into a per-drug part and a per-pair part (the same linear map
as one layer over the concatenation), so that serving projects each drug of a medication list
once and pays per pair only for the analogue features and the small layers after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(width: int, hidden: list[int], out: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, out))


class Encoder(nn.Module):
    """Drug features (N, width) -> embeddings (N, embedding), non-negative."""

    def __init__(self, width: int, hidden: list[int], embedding: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(mlp(width, hidden, embedding, dropout), nn.ReLU())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


class AnalogueEvidence(nn.Module):
    """Features of the analogue grid of each ordered pair, and where its best pairs are."""

    def __init__(self, table: torch.Tensor, classes: int, top: int) -> None:
        super().__init__()
        self.register_buffer("table", table.to(torch.uint8))
        self.top = top
        self.classes = classes

    @property
    def width(self) -> int:
        return self.top + 1

    def forward(self, n1: torch.Tensor, s1: torch.Tensor, n2: torch.Tensor, s2: torch.Tensor,
                exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """`exclude` (N, 2): reference indices of the pair itself (-1: none), whose own entries
        (both orders) are hidden in training (leave-one-out). Returns existence features
        (N, top + 1), type evidence in order and reversed (N, classes) each, and the grid
        positions (N, top) of the best interacting analogue pairs with their similarity."""
        references = self.table.shape[0]
        flat = self.table.reshape(-1)
        rows, columns = n1.unsqueeze(2), n2.unsqueeze(1)  # (N, k, 1), (N, 1, k)
        forward = flat[rows * references + columns]
        backward = flat[columns * references + rows]
        if exclude is not None:
            own = (rows == exclude[:, 0, None, None]) & (columns == exclude[:, 1, None, None])
            forward = torch.where(own, torch.zeros_like(forward), forward)
            backward = torch.where(own, torch.zeros_like(backward), backward)
        similarity = torch.minimum(s1.unsqueeze(2), s2.unsqueeze(1))  # (N, k, k)
        interacting = ((forward > 0) | (backward > 0)).to(similarity.dtype)
        scores = (similarity * interacting).flatten(1)
        best, where = torch.topk(scores, self.top, dim=1)
        existence = torch.cat([best, scores.mean(dim=1, keepdim=True)], dim=1)
        flat_similarity = similarity.flatten(1)
        return (existence, self.best_per_type(forward, flat_similarity),
                self.best_per_type(backward, flat_similarity), where, best)

    def best_per_type(self, codes: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
        """(N, classes): per type, the best similarity of an analogue pair of that type."""
        out = similarity.new_zeros((similarity.shape[0], self.classes + 2))  # not len(): export
        out = out.scatter_reduce(1, codes.flatten(1).long(), similarity, reduce="amax")
        return out[:, 1:self.classes + 1]  # code 0: nothing listed; classes + 1: no type


class Identity(nn.Module):
    """A learned vector per reference drug; a drug's identity is the softmax(similarity /
    temperature)-weighted mean over its neighbour list: its own vector for a training drug
    (similarity 1 dominates), its nearest analogues' for a drug never seen."""

    def __init__(self, references: int, width: int, temperature: float) -> None:
        super().__init__()
        self.vectors = nn.Embedding(references, width)
        nn.init.normal_(self.vectors.weight, std=0.1)
        self.temperature = temperature

    def forward(self, neighbours: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
        weight = torch.softmax(similarity / self.temperature, dim=1).unsqueeze(2)
        return (weight * self.vectors(neighbours)).sum(dim=1)


class OrderedHead(nn.Module):
    """relu(A e1 + B e2 + C side) -> hidden layers -> out; A e and B e are per drug."""

    def __init__(self, embedding: int, side: int, hidden: list[int], out: int,
                 dropout: float) -> None:
        super().__init__()
        self.first = nn.Linear(embedding, hidden[0], bias=False)
        self.second = nn.Linear(embedding, hidden[0], bias=False)
        self.side = nn.Linear(side, hidden[0])
        self.rest = nn.Sequential(nn.ReLU(), nn.Dropout(dropout),
                                  mlp(hidden[0], hidden[1:], out, dropout))

    def drug_terms(self, embedded: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.first(embedded), self.second(embedded)], dim=1)

    def forward(self, terms1: torch.Tensor, terms2: torch.Tensor,
                side: torch.Tensor) -> torch.Tensor:
        width = self.side.out_features
        return self.rest(terms1[:, :width] + terms2[:, width:] + self.side(side))


class SymmetricHead(nn.Module):
    """relu(U (e1 + e2) + Q ((P e1) * (P e2)) + V side) -> hidden layers -> out: the same for
    (a, b) and (b, a) when `side` is; U e and P e are per drug."""

    def __init__(self, embedding: int, side: int, hidden: list[int], out: int, dropout: float,
                 rank: int) -> None:
        super().__init__()
        self.sum = nn.Linear(embedding, hidden[0], bias=False)
        self.project = nn.Linear(embedding, rank, bias=False)
        self.product = nn.Linear(rank, hidden[0], bias=False)
        self.side = nn.Linear(side, hidden[0])
        self.rest = nn.Sequential(nn.ReLU(), nn.Dropout(dropout),
                                  mlp(hidden[0], hidden[1:], out, dropout))

    def drug_terms(self, embedded: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.sum(embedded), self.project(embedded)], dim=1)

    def forward(self, terms1: torch.Tensor, terms2: torch.Tensor,
                side: torch.Tensor) -> torch.Tensor:
        width = self.side.out_features
        product = self.product(terms1[:, width:] * terms2[:, width:])
        return self.rest(terms1[:, :width] + terms2[:, :width] + product + self.side(side))


class DdiNet(nn.Module):
    def __init__(self, width: int, table: torch.Tensor, cfg: dict, classes: int = 86) -> None:
        super().__init__()
        embedding = cfg["embedding"]
        self.encoder = Encoder(width, cfg["encoder_hidden"], embedding, cfg["dropout"])
        self.analogues = AnalogueEvidence(table, classes, cfg["analogue_top"])
        self.identity = Identity(table.shape[0], cfg["identity"], cfg["identity_temperature"])
        # analogue features, type evidence both ways, nearest similarities, both identities
        side = self.analogues.width + 2 * classes + 2 + 2 * cfg["identity"]
        self.existence = SymmetricHead(embedding, side, cfg["head_hidden"], 1, cfg["dropout"],
                                       cfg["product_rank"])
        self.types = OrderedHead(embedding, side, cfg["head_hidden"], classes, cfg["dropout"])

    def drug_terms(self, embedded: torch.Tensor) -> torch.Tensor:
        """Everything the heads need from one drug's embedding, computed once per drug."""
        return torch.cat([self.existence.drug_terms(embedded), self.types.drug_terms(embedded)],
                         dim=1)

    def pair(self, terms1: torch.Tensor, terms2: torch.Tensor, n1: torch.Tensor,
             s1: torch.Tensor, n2: torch.Tensor, s2: torch.Tensor,
             exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Existence logit (N,), type logits (N, 86), and the best analogue pairs' grid
        positions and similarities (N, top), from both drugs' `drug_terms`."""
        existence, in_order, reverse, where, best = self.analogues(n1, s1, n2, s2, exclude)
        near1, near2 = s1[:, :1], s2[:, :1]
        id1, id2 = self.identity(n1, s1), self.identity(n2, s2)
        symmetric = torch.cat([existence, in_order + reverse, torch.maximum(in_order, reverse),
                               torch.minimum(near1, near2), torch.maximum(near1, near2),
                               id1 + id2, id1 * id2], dim=1)
        ordered = torch.cat([existence, in_order, reverse, near1, near2, id1, id2], dim=1)
        split = self.existence.side.out_features + self.existence.project.out_features
        existence_logit = self.existence(terms1[:, :split], terms2[:, :split], symmetric)
        type_logits = self.types(terms1[:, split:], terms2[:, split:], ordered)
        return existence_logit.squeeze(1), type_logits, where, best


class DdiTraining(nn.Module):
    """The network over drug indices, for the Trainer: looks up features and neighbour lists,
    and in training shows each drug as unseen with probability `unseen_rate` (left out of its
    own list and of its partner's), so that the model learns to reason from analogues for drugs
    it has never seen. The pair's own table entries are always hidden."""

    def __init__(self, net: DdiNet, features: torch.Tensor, reference_index: torch.Tensor,
                 seen: tuple[torch.Tensor, torch.Tensor], unseen: tuple[torch.Tensor, torch.Tensor],
                 unseen_rate: float, type_weight: float) -> None:
        super().__init__()
        self.net = net
        for name, value in (("features", features), ("reference_index", reference_index),
                            ("seen", seen[0]), ("seen_similarity", seen[1]),
                            ("unseen", unseen[0]), ("unseen_similarity", unseen[1])):
            self.register_buffer(name, value, persistent=False)
        self.unseen_rate = unseen_rate
        self.type_weight = type_weight

    def lists(self, drugs: torch.Tensor, hide: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = ~hide.unsqueeze(1)
        return (torch.where(keep, self.seen[drugs], self.unseen[drugs]),
                torch.where(keep, self.seen_similarity[drugs], self.unseen_similarity[drugs]))

    def outputs(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.training:
            hide = torch.rand(len(first), 2, device=first.device) < self.unseen_rate
        else:
            hide = torch.zeros(len(first), 2, dtype=torch.bool, device=first.device)
        r1, r2 = self.reference_index[first], self.reference_index[second]
        n1, s1 = self.lists(first, hide[:, 0])
        n2, s2 = self.lists(second, hide[:, 1])
        # a hidden drug is nobody's neighbour either
        s1 = torch.where(hide[:, 1:2] & (n1 == r2.unsqueeze(1)), torch.zeros_like(s1), s1)
        s2 = torch.where(hide[:, 0:1] & (n2 == r1.unsqueeze(1)), torch.zeros_like(s2), s2)
        drugs, where = torch.unique(torch.cat([first, second]), return_inverse=True)
        terms = self.net.drug_terms(self.net.encoder(self.features[drugs]))  # each drug once
        return self.net.pair(terms[where[:len(first)]], terms[where[len(first):]], n1, s1, n2,
                             s2, torch.stack([r1, r2], dim=1))

    def forward(self, first: torch.Tensor, second: torch.Tensor,
                labels_exist: torch.Tensor | None = None,
                labels_type: torch.Tensor | None = None) -> dict:
        existence, types, _, _ = self.outputs(first, second)
        out = {"logits": (existence, types)}
        if labels_exist is not None and labels_type is not None:
            out["loss"] = pair_loss(existence, types, labels_exist, labels_type, self.type_weight)
        return out


def pair_loss(existence: torch.Tensor, types: torch.Tensor, labels_exist: torch.Tensor,
              labels_type: torch.Tensor, type_weight: float) -> torch.Tensor:
    """Binary cross-entropy on the matched pairs (label >= 0) plus `type_weight` times the
    cross-entropy of the type on positives (class >= 0), each a mean over its own items."""
    binary, typed = labels_exist >= 0, labels_type >= 0
    loss = existence.new_zeros(())
    if binary.any():
        loss = loss + F.binary_cross_entropy_with_logits(existence[binary],
                                                         labels_exist[binary].float())
    if typed.any():
        loss = loss + type_weight * F.cross_entropy(types[typed], labels_type[typed])
    return loss


class DdiServing(nn.Module):
    """The served graph. In: a medication list's drugs once (embeddings, neighbour lists) and the
    ordered pairs to score as indices into them. Out: calibrated P(interaction), calibrated type
    probabilities, and the best interacting analogue pairs (reference indices, similarity)."""

    def __init__(self, net: DdiNet, existence_scale: float, existence_bias: float,
                 type_temperature: float) -> None:
        super().__init__()
        self.net = net
        self.existence_scale, self.existence_bias = existence_scale, existence_bias
        self.type_temperature = type_temperature

    def forward(self, embeddings: torch.Tensor, neighbours: torch.Tensor,
                similarity: torch.Tensor, first: torch.Tensor, second: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        terms = self.net.drug_terms(embeddings)
        n1, n2 = neighbours[first], neighbours[second]
        existence, types, where, best = self.net.pair(terms[first], terms[second], n1,
                                                      similarity[first], n2, similarity[second])
        k = neighbours.shape[1]
        analogue_first = torch.gather(n1, 1, torch.div(where, k, rounding_mode="floor"))
        analogue_second = torch.gather(n2, 1, where % k)
        probability = torch.sigmoid(existence * self.existence_scale + self.existence_bias)
        return (probability, torch.softmax(types / self.type_temperature, dim=1),
                analogue_first, analogue_second, best)
