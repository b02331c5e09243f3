"""Verification and identification measurement (pure NumPy) and evaluation protocols.

Scores are similarities (higher = more alike); a pair is accepted when
``score >= threshold``; label 1 = genuine, 0 = impostor; NaN score = failure,
treated as "no match" at every threshold and counted in every result.
Plotting lives in :mod:`siamface.evaluation.plots` (needs matplotlib).

Modules, one job each: ``metrics`` (the figures), ``protocols`` (which comparisons: LFW, folders, pair
lists, open-set splits; folder reading, splitting and pair sampling come from :mod:`siamface.datasets`),
``embed`` (each distinct image embedded once), ``cache`` (embeddings kept between runs), ``runner`` (the
protocols run end to end), ``report`` (what a run measured, its summary and files), ``calibrate``
(choosing and saving a threshold), ``plots``.
"""

from .metrics import (
    DEFAULT_FAR_TARGETS,
    BestThreshold,
    Confusion,
    KFoldResult,
    OpenSetResult,
    RankResult,
    TarAtFar,
    auc,
    best_accuracy_threshold,
    cmc_curve,
    confusion_at,
    eer,
    eer_from_roc,
    lfw_10fold,
    open_set_rates,
    rank_k_rate,
    roc_curve,
    tar_at_far,
    tar_at_fars,
    threshold_for_far,
)
from .protocols import (
    IMAGE_EXTS,
    LfwPair,
    OpenSetSplit,
    Pair,
    flatten_folds,
    folder_identities,
    genuine_pairs,
    impostor_pairs,
    lfw_image_path,
    make_pairs,
    open_set_split,
    pair_labels,
    read_lfw_pairs,
    read_pairs_file,
    split_identities,
)

__all__ = [
    "DEFAULT_FAR_TARGETS",
    "BestThreshold",
    "Confusion",
    "KFoldResult",
    "OpenSetResult",
    "RankResult",
    "TarAtFar",
    "auc",
    "best_accuracy_threshold",
    "cmc_curve",
    "confusion_at",
    "eer",
    "eer_from_roc",
    "lfw_10fold",
    "open_set_rates",
    "rank_k_rate",
    "roc_curve",
    "tar_at_far",
    "tar_at_fars",
    "threshold_for_far",
    "IMAGE_EXTS",
    "LfwPair",
    "OpenSetSplit",
    "Pair",
    "flatten_folds",
    "folder_identities",
    "genuine_pairs",
    "impostor_pairs",
    "lfw_image_path",
    "make_pairs",
    "open_set_split",
    "pair_labels",
    "read_lfw_pairs",
    "read_pairs_file",
    "split_identities",
]
