"""Comparing embeddings: similarity and distance.

All siamface embeddings are L2-normalised, so cosine similarity and Euclidean distance carry the same
information: ``distance = sqrt(2 - 2 * similarity)``. Decisions are made on similarity (higher = more
alike), in `siamface.decision`: two faces match when ``similarity >= threshold``.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelMismatchError


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise similarity matrix (n, m) of two sets of L2-normalised embeddings (n, d) and (m, d); 1-D
    inputs give a scalar array."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.shape[-1] != b.shape[-1]:
        raise ModelMismatchError(
            f"embeddings of different sizes ({a.shape[-1]} and {b.shape[-1]}): made by different models, which "
            "cannot be compared"
        )
    return np.clip(a @ b.T, -1.0, 1.0)


def similarity_to_distance(similarity: np.ndarray | float) -> np.ndarray | float:
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(similarity, np.float64), 0.0, 4.0))


def distance_to_similarity(distance: np.ndarray | float) -> np.ndarray | float:
    return 1.0 - np.asarray(distance, np.float64) ** 2 / 2.0
