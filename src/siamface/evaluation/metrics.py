"""Pure-NumPy measurement core for face verification (1:1) and identification (1:N).

Conventions used by every function in this module
-------------------------------------------------

* A **score is a similarity: higher = more alike** (e.g. the cosine similarity of
  L2-normalised embeddings). A comparison is *accepted* (declared a match) when
  ``score >= threshold``.
* Labels: ``1`` (or ``True``) = genuine / mated pair (same person), ``0`` (or
  ``False``) = impostor / non-mated pair.
* **Failures** (failure to detect, to enroll, to embed) are represented by
  ``score = NaN``. They are never dropped: a failure is treated as *"no match" at
  every threshold*. Hence a NaN genuine pair always counts as a **false reject**
  and a NaN impostor pair always counts as a **correct reject**. Failures stay in
  the denominators of every rate (FAR, FRR, TAR, accuracy), and the number of
  failures is reported in every result object. (In ISO/IEC 19795-1 terms the
  rates computed here are therefore the *generalised* FAR/FRR, which include
  failures to acquire, not the pure algorithmic FMR/FNMR over successful
  comparisons.)
* ``+inf``/``-inf`` scores are rejected with ``ValueError``: similarities are
  finite and the infinities are reserved as the "accept nothing" /
  "accept everything" thresholds of the ROC.
* Rates whose denominator is zero are **undefined and returned as NaN** rather
  than raising: FAR/FMR when there are no impostor pairs, TAR/FRR/recall when
  there are no genuine pairs (so the ROC, its AUC and the EER are NaN for an
  all-genuine or all-impostor set). Empty input raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Confusion",
    "TarAtFar",
    "BestThreshold",
    "KFoldResult",
    "RankResult",
    "OpenSetResult",
    "DEFAULT_FAR_TARGETS",
    "confusion_at",
    "roc_curve",
    "auc",
    "eer",
    "eer_from_roc",
    "tar_at_far",
    "tar_at_fars",
    "threshold_for_far",
    "best_accuracy_threshold",
    "lfw_10fold",
    "cmc_curve",
    "rank_k_rate",
    "open_set_rates",
]

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


# --------------------------------------------------------------------------- #
# confusion at one threshold
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Confusion:
    """Counts and rates at one threshold (accept when ``score >= threshold``).

    Failures (NaN scores) are included: a genuine failure is in ``fn`` and an
    impostor failure in ``tn``. ``n_failures`` = ``n_genuine_failures`` +
    ``n_impostor_failures``.

    Rates and what happens when they are undefined:

    * ``accuracy`` = (tp + tn) / n (always defined, n > 0).
    * ``precision`` = tp / (tp + fp); **0.0 when nothing is accepted** (no NaN).
    * ``recall`` = TAR = tp / (tp + fn); NaN when there are no genuine pairs.
    * ``f1`` = harmonic mean of precision and recall; 0.0 when both are 0,
      NaN when recall is NaN.
    * ``far`` = FMR = fp / (fp + tn); NaN when there are no impostor pairs.
    * ``frr`` = FNMR = fn / (tp + fn) = 1 - recall; NaN when there are no genuine pairs.
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    far: float
    frr: float
    n_failures: int
    n_genuine_failures: int
    n_impostor_failures: int

    @property
    def tar(self) -> float:
        """True accept rate (= recall = 1 - FRR)."""
        return self.recall

    @property
    def fmr(self) -> float:
        """False match rate (= FAR here)."""
        return self.far

    @property
    def fnmr(self) -> float:
        """False non-match rate (= FRR here)."""
        return self.frr

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def confusion_at(scores: Any, labels: Any, threshold: float) -> Confusion:
    """Confusion counts and rates when accepting ``score >= threshold``.

    NaN scores are failures: a NaN genuine pair is a false reject (fn), a NaN
    impostor pair a correct reject (tn); their number is in ``n_failures``.
    Raises ``ValueError`` on empty input, mismatched lengths, labels other than
    0/1, infinite scores or a NaN threshold. See :class:`Confusion` for the rates
    that can be undefined (returned as NaN) and for ``precision`` = 0.0 when
    nothing is accepted.
    """
    s, y = _validate(scores, labels)
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold is NaN")
    failed = np.isnan(s)
    with np.errstate(invalid="ignore"):
        accepted = (~failed) & (s >= t)
    tp = int(np.count_nonzero(accepted & y))
    fp = int(np.count_nonzero(accepted & ~y))
    fn = int(np.count_nonzero(~accepted & y))
    tn = int(np.count_nonzero(~accepted & ~y))
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if (tp + fp) else 0.0
    recall = _ratio(tp, tp + fn)
    if math.isnan(recall):
        f1 = math.nan
    else:
        f1 = 2.0 * precision * recall / (precision + recall) if (precision + recall) else 0.0
    return Confusion(
        threshold=t,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=(tp + tn) / n,
        precision=precision,
        recall=recall,
        f1=f1,
        far=_ratio(fp, fp + tn),
        frr=_ratio(fn, tp + fn),
        n_failures=int(np.count_nonzero(failed)),
        n_genuine_failures=int(np.count_nonzero(failed & y)),
        n_impostor_failures=int(np.count_nonzero(failed & ~y)),
    )


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


# --------------------------------------------------------------------------- #
# accuracy-optimal threshold and the LFW protocol
# --------------------------------------------------------------------------- #
class BestThreshold(NamedTuple):
    threshold: float
    accuracy: float


def best_accuracy_threshold(scores: Any, labels: Any) -> BestThreshold:
    """Threshold maximising accuracy: ``(threshold, accuracy)``.

    Candidates are the midpoints between adjacent distinct (non-NaN) scores,
    plus one point below the lowest score (accept all) and one above the highest
    (reject all), each half the mean gap between distinct scores away (0.5 when
    there is a single distinct score). When several candidates give the same
    best accuracy the **largest** threshold is returned (the most conservative:
    lowest FAR). Failures (NaN) are rejects at every threshold. If every score
    is NaN, the threshold is ``+inf``. Raises ``ValueError`` on empty input.
    """
    s, y = _validate(scores, labels)
    ok = ~np.isnan(s)
    n = y.size
    gen = np.sort(s[ok & y])
    imp = np.sort(s[ok & ~y])
    n_imp_total = int(np.count_nonzero(~y))
    u = np.unique(s[ok])
    if u.size == 0:
        return BestThreshold(math.inf, n_imp_total / n)
    margin = 0.5 * (u[-1] - u[0]) / (u.size - 1) if u.size > 1 else 0.5
    cand = np.concatenate([[u[0] - margin], (u[:-1] + u[1:]) / 2.0, [u[-1] + margin]])
    tp = gen.size - np.searchsorted(gen, cand, side="left")
    fp = imp.size - np.searchsorted(imp, cand, side="left")
    acc = (tp + (n_imp_total - fp)) / n
    best = np.flatnonzero(acc == acc.max())
    k = int(best[-1])
    return BestThreshold(float(cand[k]), float(acc[k]))


@dataclass(frozen=True)
class KFoldResult:
    """Per-fold results of :func:`lfw_10fold`.

    ``std`` is the sample standard deviation (ddof = 1) over folds, as the LFW
    protocol specifies; ``standard_error`` = std / sqrt(n_folds).
    """

    accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]
    fold_sizes: tuple[int, ...]
    mean: float
    std: float
    standard_error: float
    n_failures: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lfw_10fold(scores: Any, labels: Any, folds: Any = 10) -> KFoldResult:
    """LFW-style k-fold accuracy (k = 10 for LFW's ``pairs.txt``).

    For each fold, the threshold maximising accuracy
    (:func:`best_accuracy_threshold`) on all the *other* folds is applied to
    that fold. ``folds`` is either a per-comparison array of fold ids (any
    hashable values, folds processed in sorted order of id) or an int ``k``:
    the comparisons are split into ``k`` contiguous folds of (nearly) equal
    size in the given order, which matches the order of LFW's ``pairs.txt``.

    Failures (NaN) are rejects everywhere and are counted in ``n_failures``.
    Raises ``ValueError`` on empty input or fewer than two folds.
    """
    s, y = _validate(scores, labels)
    n = s.size
    if isinstance(folds, (int, np.integer)) and not isinstance(folds, bool):
        k = int(folds)
        if k < 2:
            raise ValueError(f"need at least 2 folds, got {k}")
        if k > n:
            raise ValueError(f"cannot split {n} comparisons into {k} folds")
        fold_ids = np.repeat(np.arange(k), np.diff(np.linspace(0, n, k + 1).round().astype(int)))
    else:
        fold_ids = np.asarray(folds)
        if fold_ids.ndim != 1 or fold_ids.size != n:
            raise ValueError(f"folds must give one fold id per comparison ({n}), got shape {fold_ids.shape}")
    ids = np.unique(fold_ids)
    if ids.size < 2:
        raise ValueError("need at least 2 distinct folds")
    accs, thrs, sizes = [], [], []
    for fid in ids:
        test = fold_ids == fid
        train = ~test
        thr = best_accuracy_threshold(s[train], y[train]).threshold
        accs.append(confusion_at(s[test], y[test], thr).accuracy)
        thrs.append(thr)
        sizes.append(int(test.sum()))
    a = np.asarray(accs)
    std = float(a.std(ddof=1))
    return KFoldResult(
        accuracies=tuple(float(v) for v in accs),
        thresholds=tuple(float(v) for v in thrs),
        fold_sizes=tuple(sizes),
        mean=float(a.mean()),
        std=std,
        standard_error=std / math.sqrt(a.size),
        n_failures=int(np.count_nonzero(np.isnan(s))),
    )


# --------------------------------------------------------------------------- #
# identification (1:N)
# --------------------------------------------------------------------------- #
def _validate_search(
    similarity: Any, probe_ids: Any, gallery_ids: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns (per-identity best score matrix (P, I) with NaN -> -inf,
    identity labels (I,), probe ids (P,), mated mask (P,), failed-probe mask (P,))."""
    m = np.asarray(similarity, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D (probes x gallery), got shape {m.shape}")
    p_n, g_n = m.shape
    if p_n == 0:
        raise ValueError("no probes: the similarity matrix has 0 rows")
    if g_n == 0:
        raise ValueError("empty gallery: the similarity matrix has 0 columns")
    pid = np.asarray(probe_ids)
    gid = np.asarray(gallery_ids)
    if pid.ndim != 1 or pid.size != p_n:
        raise ValueError(f"probe_ids must have one id per row ({p_n}), got shape {pid.shape}")
    if gid.ndim != 1 or gid.size != g_n:
        raise ValueError(f"gallery_ids must have one id per column ({g_n}), got shape {gid.shape}")
    if np.isinf(m).any():
        raise ValueError("similarity matrix contains +/-inf; use NaN for a failure")
    failed = np.isnan(m).all(axis=1)
    m = np.where(np.isnan(m), -np.inf, m)
    idents, inverse = np.unique(gid, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")  # group each identity's templates together
    starts = np.searchsorted(inverse[order], np.arange(idents.size))
    per_id = np.maximum.reduceat(m[:, order], starts, axis=1)  # best template per identity
    mated = np.isin(pid, idents)
    return per_id, idents, pid, mated, failed


def _mated_ranks(per_id: np.ndarray, idents: np.ndarray, pid: np.ndarray, mated: np.ndarray) -> np.ndarray:
    """Rank (1-based) of the true identity for mated probes; inf when it cannot be found.

    Pessimistic on ties: identities scoring *equal* to the true one rank ahead of it.
    """
    rows = np.flatnonzero(mated)
    cols = np.searchsorted(idents, pid[rows])
    true = per_id[rows, cols]
    ranks = (per_id[rows] >= true[:, None]).sum(axis=1).astype(np.float64)
    ranks[np.isneginf(true)] = np.inf  # failure / NaN mated score: never found
    return ranks


@dataclass(frozen=True)
class RankResult:
    """Closed-set rank-k identification rate (see :func:`rank_k_rate`)."""

    k: int
    rate: float
    n_hits: int
    n_mated: int
    n_non_mated_ignored: int
    n_failures: int

    def __float__(self) -> float:
        return self.rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cmc_curve(similarity: Any, probe_ids: Any, gallery_ids: Any, max_rank: int | None = None) -> np.ndarray:
    """Cumulative match characteristic: ``cmc[r-1]`` = rank-r identification rate, r = 1..max_rank.

    Same conventions as :func:`rank_k_rate` (closed set: only mated probes count;
    ranks are over gallery *identities*; ties pessimistic; failures are misses).
    ``max_rank`` defaults to the number of gallery identities. All NaN when no
    probe is mated.
    """
    per_id, idents, pid, mated, _ = _validate_search(similarity, probe_ids, gallery_ids)
    r_max = idents.size if max_rank is None else int(max_rank)
    if r_max < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    n_mated = int(mated.sum())
    if n_mated == 0:
        return np.full(r_max, np.nan)
    ranks = _mated_ranks(per_id, idents, pid, mated)
    r = np.arange(1, r_max + 1)
    return (ranks[None, :] <= r[:, None]).sum(axis=1) / n_mated


def rank_k_rate(similarity: Any, probe_ids: Any, gallery_ids: Any, k: int = 1) -> RankResult:
    """Closed-set rank-k identification rate.

    ``similarity`` is a (P, G) matrix of probe-vs-gallery-template scores,
    ``probe_ids`` the P true ids, ``gallery_ids`` the G template ids (an
    identity may own several templates: its score is the best of its
    templates, and ranks are over *identities*). Only **mated** probes (whose id
    is in the gallery) count; the others are ignored and counted in
    ``n_non_mated_ignored``. A probe is a hit when its identity's rank is <= k.

    Ties are pessimistic: another identity with a score *equal* to the true
    identity's ranks ahead of it. NaN entries are failures (never a match); a
    probe whose row is all NaN (failure to acquire) is a miss and is counted in
    ``n_failures`` (over all probes). ``rate`` is NaN when no probe is mated.
    Raises ``ValueError`` on empty input, shape mismatch or k < 1.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    per_id, idents, pid, mated, failed = _validate_search(similarity, probe_ids, gallery_ids)
    n_mated = int(mated.sum())
    ranks = _mated_ranks(per_id, idents, pid, mated)
    hits = int((ranks <= k).sum())
    return RankResult(
        k=k,
        rate=_ratio(hits, n_mated),
        n_hits=hits,
        n_mated=n_mated,
        n_non_mated_ignored=int((~mated).sum()),
        n_failures=int(failed.sum()),
    )


@dataclass(frozen=True)
class OpenSetResult:
    """Open-set identification error rates at one threshold (see :func:`open_set_rates`)."""

    threshold: float
    rank: int
    fpir: float
    fnir: float
    n_false_positives: int
    n_non_mated: int
    n_misses: int
    n_mated: int
    n_failures: int

    @property
    def tpir(self) -> float:
        """True positive identification rate, 1 - FNIR."""
        return 1.0 - self.fnir

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_set_rates(
    similarity: Any, probe_ids: Any, gallery_ids: Any, threshold: float, *, rank: int = 1
) -> OpenSetResult:
    """Open-set (watch-list) identification rates: FPIR and FNIR at ``threshold``.

    Definitions follow ISO/IEC 19795-1 and NIST FRVT 1:N:

    * **FPIR** (false positive identification rate) = fraction of *non-mated*
      searches (probe id not in the gallery) that return any candidate with
      score >= threshold, i.e. whose best score over the gallery is >= threshold.
    * **FNIR** (false negative identification rate) = fraction of *mated*
      searches whose true identity is **not** returned within the top ``rank``
      identities (default 1) with a score >= threshold. ``TPIR = 1 - FNIR``.

    The gallery may hold several templates per identity (``gallery_ids``
    repeats): an identity scores its best template, ranks are over identities,
    and ties with another identity are pessimistic (the true identity loses).
    NaN entries are failures and never match. A probe whose whole row is NaN
    (failure to acquire) is a miss if mated and a correct non-match if
    non-mated; such probes are counted in ``n_failures``. FPIR is NaN when there
    is no non-mated probe; FNIR is NaN when there is no mated probe.
    Raises ``ValueError`` on empty input, shape mismatch, NaN threshold, rank < 1.
    """
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold is NaN")
    rank = int(rank)
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    per_id, idents, pid, mated, failed = _validate_search(similarity, probe_ids, gallery_ids)
    best = per_id.max(axis=1)  # -inf for failed probes
    non_mated = ~mated
    fp = int(np.count_nonzero(non_mated & (best >= t)))
    rows = np.flatnonzero(mated)
    ranks = _mated_ranks(per_id, idents, pid, mated)
    true = per_id[rows, np.searchsorted(idents, pid[rows])]
    found = (ranks <= rank) & (true >= t)
    misses = int(np.count_nonzero(~found))
    n_mated = int(rows.size)
    n_non = int(np.count_nonzero(non_mated))
    return OpenSetResult(
        threshold=t,
        rank=rank,
        fpir=_ratio(fp, n_non),
        fnir=_ratio(misses, n_mated),
        n_false_positives=fp,
        n_non_mated=n_non,
        n_misses=misses,
        n_mated=n_mated,
        n_failures=int(failed.sum()),
    )
