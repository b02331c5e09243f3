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

The figures live in one module per job (``verification``: one threshold's confusion, best accuracy, LFW
folds; ``roc``: ROC, AUC, EER, FAR operating points; ``identification``: 1:N rank-k, CMC, open-set
FPIR/FNIR, FNIR at FPIR targets, DET points and the gallery-size sweep); every name is importable from here.
"""

from ._checks import DEFAULT_FAR_TARGETS
from .identification import (
    DEFAULT_FPIR_TARGETS,
    OpenSetResult,
    RankResult,
    SweepPoint,
    cmc_curve,
    det_curve,
    fnir_at_fpir,
    gallery_sweep,
    open_set_rates,
    rank_k_rate,
    threshold_at_fpir,
)
from .roc import TarAtFar, auc, eer, eer_from_roc, roc_curve, tar_at_far, tar_at_fars, threshold_for_far
from .verification import BestThreshold, Confusion, KFoldResult, best_accuracy_threshold, confusion_at, lfw_10fold

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
    "DEFAULT_FPIR_TARGETS",
    "SweepPoint",
    "det_curve",
    "fnir_at_fpir",
    "gallery_sweep",
    "threshold_at_fpir",
]
