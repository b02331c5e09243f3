"""How close a grouping is to the truth: BCubed precision and recall (Bagga & Baldwin 1998; Amigó et al.
2009) and pairwise precision, recall and F.

    bcubed(predicted, truth)    -> (precision, recall)   mean over faces of the share of the face's group
                                                           that is its person / of its person that is in its group
    pairwise(predicted, truth)  -> (precision, recall, f) over the pairs put in one group / of one person

A face alone in its group counts as a group of one (BCubed precision 1 for it, recall 1/size of its person).
"""

from __future__ import annotations

import numpy as np


def _contingency(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of each (group, person) cell present, and each face's cell, group and person indices."""
    _, p = np.unique(np.asarray(predicted), return_inverse=True)
    _, t = np.unique(np.asarray(truth), return_inverse=True)
    cells, cell_of = np.unique(np.stack([p.ravel(), t.ravel()], 1), axis=0, return_inverse=True)
    counts = np.bincount(cell_of.ravel())
    return counts, cells, np.stack([cell_of.ravel(), p.ravel(), t.ravel()])


def bcubed(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """BCubed (precision, recall) of a grouping against the true people."""
    if len(predicted) == 0:
        return 1.0, 1.0
    counts, _, (cell, p, t) = _contingency(predicted, truth)
    group_size, person_size = np.bincount(p), np.bincount(t)
    shared = counts[cell]
    return float(np.mean(shared / group_size[p])), float(np.mean(shared / person_size[t]))


def pairwise(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Pairwise (precision, recall, F): pairs of faces in one group vs pairs of one person."""
    counts, cells, (_, p, t) = _contingency(predicted, truth)
    pairs = lambda c: float(np.sum(c * (c - 1) / 2))  # noqa: E731
    both = pairs(counts)
    in_group, same_person = pairs(np.bincount(p)), pairs(np.bincount(t))
    precision = both / in_group if in_group else 1.0
    recall = both / same_person if same_person else 1.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f
