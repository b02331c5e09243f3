"""The ROC, its AUC and EER, and the operating points at a FAR target (1:1 scores)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ._checks import _COUNT_EPS, DEFAULT_FAR_TARGETS, _as_scores, _ratio, _validate


# --------------------------------------------------------------------------- #
# ROC
# --------------------------------------------------------------------------- #
def _roc_counts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fp counts, tp counts, thresholds) at +inf then every distinct finite score, descending."""
    ok = ~np.isnan(s)
    ss, yy = s[ok], y[ok]
    order = np.argsort(-ss, kind="stable")
    ss, yy = ss[order], yy[order]
    if ss.size:
        last_of_run = np.flatnonzero(np.diff(ss) != 0)
        idx = np.concatenate([last_of_run, [ss.size - 1]])
        tps = np.cumsum(yy)[idx]
        fps = np.cumsum(~yy)[idx]
        thr = ss[idx]
    else:
        tps = fps = np.zeros(0, dtype=np.int64)
        thr = np.zeros(0)
    tps = np.concatenate([[0], tps]).astype(np.int64)
    fps = np.concatenate([[0], fps]).astype(np.int64)
    thr = np.concatenate([[np.inf], thr])
    return fps, tps, thr


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC: ``(far, tar, thresholds)``, ordered by decreasing threshold.

    There is one point per *distinct* observed score (ties between genuine and
    impostor scores move the curve diagonally, as they should), preceded by the
    point ``(0, 0)`` at threshold ``+inf`` (accept nothing). ``far[k]`` and
    ``tar[k]`` are the rates when accepting ``score >= thresholds[k]``.

    Without failures the last point (lowest score) is ``(1, 1)``. Failures (NaN)
    are no match at every finite threshold, so with failures the lowest finite
    threshold reaches only ``(1 - impostor failure rate, 1 - genuine failure
    rate)``; a closing point ``(1, 1)`` at threshold ``-inf`` ("accept
    everything, failures included", which no real threshold achieves) is then
    appended, so that the curve always ends at ``(1, 1)``. This is the same as
    ranking failures below every real score, and makes :func:`auc` the usual
    probability that a genuine pair outscores an impostor pair (ties = 1/2).

    With no impostor pairs ``far`` is all NaN; with no genuine pairs ``tar`` is
    all NaN (undefined). Raises ``ValueError`` on empty input.
    """
    s, y = _validate(scores, labels)
    fps, tps, thr = _roc_counts(s, y)
    n_gen = int(np.count_nonzero(y))
    n_imp = y.size - n_gen
    if np.isnan(s).any():
        fps = np.concatenate([fps, [n_imp]])
        tps = np.concatenate([tps, [n_gen]])
        thr = np.concatenate([thr, [-np.inf]])
    far = fps / n_imp if n_imp else np.full(fps.shape, np.nan)
    tar = tps / n_gen if n_gen else np.full(tps.shape, np.nan)
    return far.astype(np.float64), tar.astype(np.float64), thr


def auc(far: Any, tar: Any) -> float:
    """Area under a ROC curve by the trapezoid rule.

    ``far`` must be monotonic (non-decreasing or non-increasing). Returns NaN if
    any value is NaN (e.g. the ROC of an all-genuine or all-impostor set).
    Raises ``ValueError`` for fewer than two points or mismatched lengths.
    """
    x = np.asarray(far, dtype=np.float64)
    yv = np.asarray(tar, dtype=np.float64)
    if x.ndim != 1 or yv.ndim != 1 or x.size != yv.size:
        raise ValueError(f"far and tar must be 1-D and of equal length, got {x.shape} and {yv.shape}")
    if x.size < 2:
        raise ValueError("auc needs at least two ROC points")
    if np.isnan(x).any() or np.isnan(yv).any():
        return math.nan
    dx = np.diff(x)
    if (dx < 0).any() and (dx > 0).any():
        raise ValueError("far must be monotonic to integrate the curve")
    return float(abs(np.sum(dx * (yv[1:] + yv[:-1]) / 2.0)))


def eer_from_roc(far: Any, tar: Any, thresholds: Any | None = None) -> tuple[float, float]:
    """EER of an ROC given as arrays ordered by decreasing threshold (as from :func:`roc_curve`).

    Returns ``(eer, threshold)``; see :func:`eer`. ``threshold`` is NaN when
    ``thresholds`` is not given.
    """
    x = np.asarray(far, dtype=np.float64)
    t = np.asarray(tar, dtype=np.float64)
    if x.size == 0 or x.size != t.size:
        raise ValueError("far and tar must be non-empty and of equal length")
    if np.isnan(x).any() or np.isnan(t).any():
        return math.nan, math.nan
    d = x - (1.0 - t)  # FAR - FRR, non-decreasing along the curve
    hit = np.flatnonzero(d >= 0)
    if hit.size == 0:  # curve never reaches FAR >= FRR (not from roc_curve)
        k = x.size - 1
        return float((x[k] + 1.0 - t[k]) / 2.0), (
            float(np.asarray(thresholds)[k]) if thresholds is not None else math.nan
        )
    k = int(hit[0])
    thr = np.asarray(thresholds, dtype=np.float64) if thresholds is not None else None
    if d[k] == 0 or k == 0:
        e = x[k] if d[k] == 0 else (x[k] + 1.0 - t[k]) / 2.0
        return float(e), (float(thr[k]) if thr is not None else math.nan)
    a = -d[k - 1] / (d[k] - d[k - 1])  # in (0, 1]
    e = x[k - 1] + a * (x[k] - x[k - 1])
    if thr is None:
        return float(e), math.nan
    t0, t1 = thr[k - 1], thr[k]
    if np.isfinite(t0) and np.isfinite(t1):
        th = t0 + a * (t1 - t0)
    else:
        th = t1 if np.isfinite(t1) else t0
    return float(e), float(th)


def eer(scores: Any, labels: Any) -> tuple[float, float]:
    """Equal error rate: ``(eer, threshold)``.

    The ROC (see :func:`roc_curve`) is linearly interpolated between its two
    consecutive points where ``FAR - FRR`` changes sign (``FRR = 1 - TAR``), and
    the EER is the rate where ``FAR == FRR`` on that segment. The threshold is
    interpolated linearly between the two bracketing thresholds; when one of them
    is ``+inf``/``-inf`` the finite one is returned. (Between two observed
    scores any threshold gives the rates of the higher one; the interpolated EER
    is the operating point of the interpolated, i.e. randomised, classifier.)
    If a ROC point has exactly ``FAR == FRR`` its own threshold is returned.

    Failures count as rejects (see module doc); they are part of both rates.
    Returns ``(nan, nan)`` when there are no genuine or no impostor pairs.
    Raises ``ValueError`` on empty input.
    """
    far, tar, thr = roc_curve(scores, labels)
    return eer_from_roc(far, tar, thr)


# --------------------------------------------------------------------------- #
# operating points at a FAR target
# --------------------------------------------------------------------------- #
class TarAtFar(NamedTuple):
    """Result of :func:`tar_at_far` (a tuple: ``tar, threshold, achieved_far, supported``)."""

    tar: float
    threshold: float
    achieved_far: float
    supported: bool
    far_target: float
    n_impostors: int
    n_failures: int


def _check_far_target(far_target: float) -> float:
    f = float(far_target)
    if not (0.0 < f <= 1.0):
        raise ValueError(f"far_target must be in (0, 1], got {far_target!r}")
    return f


def _far_point(s: np.ndarray, y: np.ndarray, far_target: float) -> tuple[float, int, int]:
    """(threshold, fp count, tp count) of the smallest ROC threshold with FAR <= target."""
    fps, tps, thr = _roc_counts(s, y)
    n_imp = int(np.count_nonzero(~y))
    allowed = far_target * n_imp + _COUNT_EPS
    ok = np.flatnonzero(fps <= allowed)  # fps is non-decreasing; index 0 (+inf) always ok
    k = int(ok[-1])
    return float(thr[k]), int(fps[k]), int(tps[k])


def tar_at_far(scores: Any, labels: Any, far_target: float) -> TarAtFar:
    """TAR at the smallest threshold whose FAR is <= ``far_target``.

    Candidate thresholds are ``+inf`` (accept nothing) and the distinct observed
    scores; the smallest one with ``FAR <= far_target`` maximises TAR. Returns
    ``TarAtFar(tar, threshold, achieved_far, supported, far_target, n_impostors,
    n_failures)``; ``achieved_far <= far_target`` always.

    ``supported`` is False when the number of impostor pairs is smaller than
    ``1 / far_target``: the FAR cannot then be measured at that resolution (for
    instance FAR = 1e-4 needs >= 10,000 impostor comparisons, and in practice
    many more for a stable estimate), so the result says little.

    Failures: NaN impostor pairs are correct rejects and NaN genuine pairs false
    rejects at every threshold (both stay in the denominators). With no impostor
    pairs everything is undefined: ``(nan, nan, nan, False, ...)``. With no
    genuine pairs ``tar`` is NaN but the threshold and achieved FAR are valid.
    """
    s, y = _validate(scores, labels)
    f = _check_far_target(far_target)
    n_imp = int(np.count_nonzero(~y))
    n_gen = y.size - n_imp
    n_fail = int(np.count_nonzero(np.isnan(s)))
    if n_imp == 0:
        return TarAtFar(math.nan, math.nan, math.nan, False, f, 0, n_fail)
    thr, fp, tp = _far_point(s, y, f)
    supported = n_imp * f >= 1.0 - _COUNT_EPS
    return TarAtFar(_ratio(tp, n_gen), thr, fp / n_imp, bool(supported), f, n_imp, n_fail)


def tar_at_fars(scores: Any, labels: Any, far_targets: Sequence[float] = DEFAULT_FAR_TARGETS) -> list[TarAtFar]:
    """:func:`tar_at_far` for several targets (default 1e-1, 1e-2, 1e-3, 1e-4), in the given order."""
    s, y = _validate(scores, labels)
    return [tar_at_far(s, y, f) for f in far_targets]


def threshold_for_far(scores: Any, labels: Any | None, far_target: float) -> float:
    """Smallest threshold whose FAR on this data is <= ``far_target``.

    Two ways to call it:

    * ``threshold_for_far(scores, labels, far_target)``: labelled comparisons;
      candidate thresholds are all distinct observed scores (same rule and
      result as ``tar_at_far(...).threshold``);
    * ``threshold_for_far(impostor_scores, None, far_target)``: impostor scores
      only (calibration on non-mated pairs); candidates are the impostor scores.

    Returns an observed score, or ``+inf`` (accept nothing) when no observed
    score satisfies the target (e.g. target 0.01 with 50 impostors and the top
    impostor scoring highest of all). NaN impostor scores are failures: correct
    rejects that stay in the FAR denominator. Raises ``ValueError`` on empty
    input or a target outside (0, 1]; returns NaN when labels are given and
    there is no impostor pair.
    """
    f = _check_far_target(far_target)
    if labels is None:
        s = _as_scores(scores, "impostor_scores")
        y = np.zeros(s.size, dtype=bool)
    else:
        s, y = _validate(scores, labels)
        if not (~y).any():
            return math.nan
    return _far_point(s, y, f)[0]
