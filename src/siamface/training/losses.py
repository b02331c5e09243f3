"""Siamese heads and losses, each with its accuracy-at-threshold figure for the progress bar.

All take L2-normalised embeddings of one batch and return ``(loss, accuracy)``:

* `ContrastiveLoss` (Hadsell, Chopra, LeCun 2006): Euclidean distance d of each pair,
  ``y d^2 + (1 - y) max(0, margin - d)^2``; accuracy at ``d < margin / 2``.
* `BCEHead`: the original design's head, ``sigmoid(dense(|e_a - e_b|))`` (L1-distance layer + dense +
  sigmoid) trained with binary cross-entropy; accuracy at probability 0.5. The head is for training only:
  the exported encoder is compared by cosine similarity.
* `TripletLoss` (batch-hard, Hermans, Beyer, Leibe 2017): for every anchor the farthest image of its
  identity and the nearest of another, ``max(0, d_ap - d_an + margin)``; accuracy = share of anchors with
  ``d_ap < d_an``.
"""

from __future__ import annotations

from . import require_torch

torch = require_torch()
nn = torch.nn
F = torch.nn.functional

PAIR_LOSSES = ("contrastive", "bce")
# Contrastive 1.4 ~ sqrt(2) (orthogonal unit vectors): with hard negatives, validation EER on AT&T
# 10-12 % against 21-25 % at 1.0 with random impostors (README, Training).
DEFAULT_MARGIN = {"contrastive": 1.4, "triplet": 0.3, "bce": 0.0}


class ContrastiveLoss(nn.Module):
    def __init__(self, margin: float = 1.4) -> None:
        super().__init__()
        self.margin = float(margin)

    def forward(self, ea, eb, same):
        d = (ea - eb).pow(2).sum(1).clamp_min(1e-12).sqrt()
        loss = same * d.pow(2) + (1 - same) * F.relu(self.margin - d).pow(2)
        acc = ((d < self.margin / 2).float() == same).float().mean()
        return loss.mean() / 2, acc


class BCEHead(nn.Module):
    def __init__(self, embedding_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(embedding_size, 1)
        with torch.no_grad():  # start as "far apart = different": a negative weight on every distance
            self.dense.weight.fill_(-4.0 / embedding_size**0.5)
            self.dense.bias.fill_(2.0)

    def forward(self, ea, eb, same):
        logit = self.dense((ea - eb).abs()).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logit, same)
        acc = ((logit > 0).float() == same).float().mean()
        return loss, acc


class TripletLoss(nn.Module):
    def __init__(self, margin: float = 0.3) -> None:
        super().__init__()
        self.margin = float(margin)

    def forward(self, emb, labels):
        d = torch.cdist(emb, emb).clamp_min(0)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool)
        pos = same & ~eye
        has = pos.any(1) & (~same).any(1)
        d_ap = torch.where(pos, d, torch.zeros_like(d)).max(1).values
        d_an = torch.where(~same, d, torch.full_like(d, float("inf"))).min(1).values
        d_ap, d_an = d_ap[has], d_an[has]
        loss = F.relu(d_ap - d_an + self.margin).mean()
        acc = (d_ap < d_an).float().mean()
        return loss, acc


def build_loss(name: str, margin: float | None, embedding_size: int) -> nn.Module:
    if name == "contrastive":
        return ContrastiveLoss(DEFAULT_MARGIN[name] if margin is None else margin)
    if name == "triplet":
        return TripletLoss(DEFAULT_MARGIN[name] if margin is None else margin)
    if name == "bce":
        return BCEHead(embedding_size)
    raise ValueError(f"unknown loss {name!r}; choose one of: contrastive, bce, triplet")
