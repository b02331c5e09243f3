"""Which images go together: identity-balanced batches, in-batch Siamese pairs, hard negatives.

Every training step takes a batch of P identities x K images (`pk_batches`). The triplet loss mines it
batch-hard; the pair losses (contrastive, BCE) take from it one genuine and one impostor pair per image
(`batch_pairs`): balanced by construction, with the impostor drawn at random or, with ``hard=True``, the
closest other-identity image under the current embeddings (hard-negative mining). Both images of a pair
go through the one shared encoder in the same forward pass: the Siamese twins share every weight.
"""

from __future__ import annotations

import numpy as np


def pk_batches(
    labels: np.ndarray, batch_size: int, k: int, rng: np.random.Generator, steps: int | None = None
) -> list[np.ndarray]:
    """One epoch of batches (index arrays): each has ``batch_size // k`` identities with ``k`` images each
    (without replacement when the identity has enough). ``steps`` defaults to ``ceil(n / batch_size)``."""
    labels = np.asarray(labels)
    by_id = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    by_id = [ix for ix in by_id if len(ix) >= 2] or by_id
    k = max(2, min(k, batch_size // 2))
    p = max(2, min(len(by_id), batch_size // k))
    steps = steps or max(1, -(-len(labels) // batch_size))
    out = []
    for _ in range(steps):
        chosen = rng.choice(len(by_id), p, replace=False)
        parts = [rng.choice(by_id[c], k, replace=len(by_id[c]) < k) for c in chosen]
        out.append(np.concatenate(parts))
    return out


def batch_pairs(
    labels: np.ndarray, rng: np.random.Generator, distances: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, same) positions within a batch: for every image one genuine partner (another image of its
    identity, at random) and one impostor (at random, or the nearest under ``distances`` (n, n) when given:
    hard-negative mining). Images alone in their identity get no genuine pair."""
    labels = np.asarray(labels)
    n = len(labels)
    same = labels[:, None] == labels[None, :]
    a, b, y = [], [], []
    for i in range(n):
        pos = np.flatnonzero(same[i])
        pos = pos[pos != i]
        neg = np.flatnonzero(~same[i])
        if len(pos):
            a.append(i), b.append(int(rng.choice(pos))), y.append(1.0)
        if len(neg):
            j = int(neg[np.argmin(distances[i, neg])]) if distances is not None else int(rng.choice(neg))
            a.append(i), b.append(j), y.append(0.0)
    return np.array(a, np.int64), np.array(b, np.int64), np.array(y, np.float32)
