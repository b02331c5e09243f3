"""Input validation shared by the metrics (see `siamface.evaluation.metrics` for the conventions)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: The FAR operating points usually reported: 1e-1, 1e-2, 1e-3, 1e-4.
DEFAULT_FAR_TARGETS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)

# Tolerance used when comparing a count of false accepts with far_target * n.
_COUNT_EPS = 1e-9


# --------------------------------------------------------------------------- #
# input validation
# --------------------------------------------------------------------------- #
def _as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence, got an array of shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{name} is empty: at least one comparison is needed")
    if np.isinf(s).any():
        raise ValueError(f"{name} contains +/-inf; scores must be finite similarities, or NaN for a failure")
    return s


def _as_labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D sequence, got an array of shape {y.shape}")
    if y.size != n:
        raise ValueError(f"scores and labels differ in length: {n} scores, {y.size} labels")
    if y.dtype == bool:
        return y.copy()
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"labels must be 0/1 or booleans, got dtype {y.dtype}")
    ok = (y == 0) | (y == 1)
    if not ok.all():
        bad = y[~ok][:5].tolist()
        raise ValueError(f"labels must be 0 (impostor) or 1 (genuine); found {bad}")
    return y.astype(bool)


def _validate(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _as_scores(scores)
    y = _as_labels(labels, s.size)
    return s, y


def _ratio(num: float, den: float) -> float:
    """num/den, NaN when den == 0 (undefined rate)."""
    return float(num) / float(den) if den else math.nan
