"""1:1 figures at one threshold: the confusion counts, the accuracy-optimal threshold, the LFW protocol."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from ._checks import _ratio, _validate


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
