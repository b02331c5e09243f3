"""Run an evaluation protocol with any `Pipeline`: embed each distinct image once, score, measure, report.

Protocols (the lists of comparisons come from :mod:`siamface.evaluation.protocols`):

* :func:`evaluate_lfw` - LFW ``pairs.txt`` + image root; k-fold accuracy (LFW: 10 folds, the threshold
  chosen on k-1 folds and applied to the remaining one), mean +- std, besides the pooled figures;
* :func:`evaluate_folder` - folder-per-person dataset: every genuine pair + a seeded sample of impostors;
* :func:`evaluate_pair_lists` - two-column pair lists, one of same-person and one of different-person
  pairs (``celeba_ids/pairs_same.txt`` + ``pairs_different.txt``), relative to a root;
* :func:`evaluate_identification` - open-set 1:N from a folder-per-person dataset (`open_set_split`):
  rank-1/rank-5 (closed set, mated probes), FPIR/FNIR at the threshold; the verification figures are
  computed on every probe x gallery-template comparison.

Every protocol returns an :class:`EvaluationReport` (``to_dict()`` for JSON). The score of a pair is the
cosine similarity of the embeddings of the largest face of each image. **Failures**: an image where no face
is found (or that cannot be decoded) gives each of its pairs the score NaN, which the metrics treat as a
non-match at every threshold (a false reject for a genuine pair, a correct reject for an impostor pair);
those pairs stay in every denominator and are counted in the report.

Embeddings go through an optional :class:`~siamface.evaluation.cache.EmbeddingCache`, so a second run
(another threshold, another criterion) does not embed anything again.

This module holds the protocols; the jobs around them have their own modules (their names are re-exported
here): :mod:`.embed` (embedding every distinct image once), :mod:`.report` (the report, its summary and its
files), :mod:`.calibrate` (choosing and saving a threshold).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import Progress
from ..errors import ConfigError
from .cache import EmbeddingCache, detector_options
from .calibrate import UnsupportedTargetError, calibrate, calibration_from_report, choose_threshold, parse_target
from .embed import EmbeddingRun, ImageOutcome, _matrix, embed_images
from .metrics import (
    DEFAULT_FAR_TARGETS,
    DEFAULT_FPIR_TARGETS,
    auc,
    best_accuracy_threshold,
    confusion_at,
    det_curve,
    eer_from_roc,
    fnir_at_fpir,
    gallery_sweep,
    lfw_10fold,
    open_set_rates,
    rank_k_rate,
    roc_curve,
    tar_at_far,
)
from .protocols import flatten_folds, make_pairs, open_set_split, read_lfw_pairs, read_pairs_file
from .report import FAILURE_POLICY, EvaluationReport, IdentificationResult, _now, format_report, write_outputs

log = logging.getLogger(__name__)

__all__ = [
    "FAILURE_POLICY",
    "EvaluationReport",
    "IdentificationResult",
    "ImageOutcome",
    "Progress",
    "UnsupportedTargetError",
    "calibrate",
    "calibration_from_report",
    "choose_threshold",
    "embed_images",
    "evaluate_folder",
    "evaluate_identification",
    "evaluate_lfw",
    "evaluate_pair_lists",
    "evaluate_pairs",
    "format_report",
    "parse_target",
    "write_outputs",
]


# --------------------------------------------------------------------------------------------------- #
# protocols
# --------------------------------------------------------------------------------------------------- #
def _rel(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            pass
    return str(path)


def _pipeline_facts(
    pipeline: Any, threshold: float | None, identify: bool = False, size: tuple[int, int] = (1, 1)
) -> dict[str, Any]:
    """Model, detector and the threshold in force (`identify`: the 1:N one, for a gallery of `size`: people,
    templates)."""
    info = pipeline.encoder.info
    det = pipeline.detector
    thresholds = pipeline.thresholds.given(threshold)
    chosen = thresholds.for_gallery(*size).identify if identify else thresholds.verify
    return {
        "model": info.name,
        "model_version": info.version,
        "detector": getattr(det, "name", type(det).__name__),
        "detector_options": detector_options(det),
        "threshold": chosen.value,
        "threshold_source": chosen.source,
    }


def _verification(
    scores: np.ndarray, labels: np.ndarray, threshold: float, far_targets: Sequence[float]
) -> dict[str, Any]:
    far, tar, thr = roc_curve(scores, labels)
    e, e_thr = eer_from_roc(far, tar, thr)
    ok = ~np.isnan(scores)
    without = None
    if (~ok).any() and ok.any():
        without = confusion_at(scores[ok], labels[ok], threshold)
    return {
        "n_pairs": int(scores.size),
        "n_genuine": int(labels.sum()),
        "n_impostor": int((~labels).sum()),
        "n_failed_pairs": int((~ok).sum()),
        "n_failed_genuine": int((~ok & labels).sum()),
        "n_failed_impostor": int((~ok & ~labels).sum()),
        "at_threshold": confusion_at(scores, labels, threshold),
        "at_threshold_without_failures": without,
        "auc": auc(far, tar),
        "eer": e,
        "eer_threshold": e_thr,
        "tar_at_far": [tar_at_far(scores, labels, f) for f in far_targets],
        "best_accuracy": best_accuracy_threshold(scores, labels),
    }


def _image_facts(run: EmbeddingRun, root: Path | None) -> dict[str, Any]:
    failed = [(p, o) for p, o in run.outcomes.items() if o.error is not None]
    return {
        "n_images": len(run.outcomes),
        "n_failures": len(failed),
        "n_unreadable": sum(1 for _, o in failed if o.error.startswith("unreadable")),
        "failed_images": [
            _rel(p.resolve(), root) + ("" if o.error == "no face" else f" ({o.error})") for p, o in failed
        ],
        "n_multi_face": sum(1 for o in run.outcomes.values() if o.n_faces > 1),
        "n_from_cache": run.n_cached,
        "n_computed": run.n_computed,
    }


def evaluate_pairs(
    pipeline: Any,
    pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    labels: Sequence[int] | np.ndarray,
    *,
    protocol: str = "pairs",
    dataset: str = "",
    root: str | os.PathLike | None = None,
    folds: Any = None,
    threshold: float | None = None,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
    options: dict[str, Any] | None = None,
    face: str = "largest",
) -> EvaluationReport:
    """Verify every pair ``(a, b)`` (label 1 = same person) and measure; the general form of the protocols.

    ``folds``: per-pair fold ids (or an int k) for the LFW k-fold accuracy; None to skip it.
    ``threshold``: the threshold to report at (default: the pipeline's, i.e. explicit > calibrated > model).
    """
    t0 = time.perf_counter()
    y = np.asarray(labels).astype(bool)
    if len(pairs) == 0:
        raise ConfigError("no pairs to evaluate")
    if y.size != len(pairs):
        raise ConfigError(f"{len(pairs)} pairs but {y.size} labels")
    a_files = [Path(a) for a, _ in pairs]
    b_files = [Path(b) for _, b in pairs]
    facts = _pipeline_facts(pipeline, threshold)
    run = embed_images(pipeline, a_files + b_files, cache=cache, progress=progress, face=face)
    dim = pipeline.encoder.info.embedding_size
    ea, eb = _matrix(run.outcomes, a_files, dim), _matrix(run.outcomes, b_files, dim)
    scores = np.sum(ea.astype(np.float64) * eb.astype(np.float64), axis=1)  # NaN where either failed
    scores = np.clip(scores, -1.0, 1.0)
    kfold = None
    if folds is not None:
        fold_ids = folds
        n_folds = int(folds) if isinstance(folds, (int, np.integer)) else len(np.unique(np.asarray(folds)))
        if n_folds >= 2:
            kfold = lfw_10fold(scores, y, fold_ids)
    root_p = Path(root).resolve() if root is not None else None
    return EvaluationReport(
        protocol=protocol,
        dataset=dataset,
        **facts,
        **_image_facts(run, root_p),
        **_verification(scores, y, facts["threshold"], far_targets),
        kfold=kfold,
        seconds=time.perf_counter() - t0,
        created=_now(),
        options=dict(options or {}),
        face=face,
        scores=scores,
        labels=y,
        pairs=[(_rel(a.resolve(), root_p), _rel(b.resolve(), root_p)) for a, b in zip(a_files, b_files)],
    )


def evaluate_lfw(
    pipeline: Any, pairs_file: str | os.PathLike, root: str | os.PathLike, *, face: str = "centre", **kw
) -> EvaluationReport:
    """LFW protocol: ``pairs.txt`` (header ``folds per-class``), images ``root/name/name_0001.jpg``. When an
    image has several faces, the one nearest its centre is used (LFW's crops are centred on the subject)
    unless ``face="largest"``.

    Besides the pooled figures, ``report.kfold`` has the k-fold accuracy: for each fold the
    best-accuracy threshold of the other folds is applied to it; mean and sample std over folds.
    """
    folds = _read(read_lfw_pairs, pairs_file)
    lfw_pairs, labels, fold_ids = flatten_folds(folds)
    pairs = [pr.paths(root) for pr in lfw_pairs]
    options = {"pairs_file": str(Path(pairs_file).resolve()), "folds": len(folds), **kw.pop("options", {})}
    return evaluate_pairs(
        pipeline,
        pairs,
        labels,
        protocol="lfw",
        dataset=str(Path(root).resolve()),
        root=root,
        folds=fold_ids if len(folds) >= 2 else None,
        options=options,
        face=face,
        **kw,
    )


def evaluate_folder(
    pipeline: Any,
    root: str | os.PathLike,
    *,
    n_impostors: int | None = None,
    impostor_ratio: float = 1.0,
    seed: int = 0,
    **kw,
) -> EvaluationReport:
    """Folder-per-person dataset: all genuine pairs, then impostor pairs sampled with ``seed``
    (``n_impostors`` of them, default ``impostor_ratio`` x the number of genuine pairs)."""
    try:
        pairs = make_pairs(root, impostor_ratio=impostor_ratio, n_impostors=n_impostors, seed=seed)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if not pairs:
        raise ConfigError(f"{root}: no genuine or impostor pairs (need sub-folders with 2+ images each)")
    labels = np.array([p.label for p in pairs])
    options = {
        "seed": seed,
        "impostors": int((labels == 0).sum()),
        "impostor_ratio": impostor_ratio,
        **kw.pop("options", {}),
    }
    return evaluate_pairs(
        pipeline,
        [(p.a, p.b) for p in pairs],
        labels,
        protocol="folder",
        dataset=str(Path(root).resolve()),
        root=root,
        options=options,
        **kw,
    )


def evaluate_pair_lists(
    pipeline: Any,
    same_file: str | os.PathLike,
    different_file: str | os.PathLike,
    root: str | os.PathLike,
    *,
    face: str = "centre",
    **kw,
) -> EvaluationReport:
    """Two two-column pair lists (``a b`` per line, relative to ``root``): same-person, different-person.
    Like LFW, the face nearest each image's centre is used when there are several (``face="largest"``:
    the biggest)."""
    same, diff, dropped = _distinct_pairs(
        _read(read_pairs_file, same_file, root), _read(read_pairs_file, different_file, root)
    )
    labels = np.array([1] * len(same) + [0] * len(diff))
    options = {
        "pairs_same": str(Path(same_file).resolve()),
        "pairs_different": str(Path(different_file).resolve()),
        "pairs_dropped": dropped,
        **kw.pop("options", {}),
    }
    return evaluate_pairs(
        pipeline,
        same + diff,
        labels,
        protocol="pairs",
        dataset=str(Path(root).resolve()),
        root=root,
        options=options,
        face=face,
        **kw,
    )


def evaluate_identification(
    pipeline: Any,
    root: str | os.PathLike,
    *,
    gallery_per_id: int = 1,
    unknown_fraction: float = 0.2,
    seed: int = 0,
    threshold: float | None = None,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
    fpir_targets: Sequence[float] = DEFAULT_FPIR_TARGETS,
    options: dict[str, Any] | None = None,
) -> EvaluationReport:
    """Open-set 1:N: ``unknown_fraction`` of the identities are left out of the gallery (their images are
    non-mated probes); every other identity enrols ``gallery_per_id`` images, the rest are mated probes.

    ``report.identification``: rank-1, 5 and 10 (closed set: mated probes; an identity scores its best
    template), FPIR (non-mated probes whose best score >= threshold) and FNIR (mated probes whose identity
    is not rank 1 with a score >= threshold) at the threshold in force for this gallery's size, FNIR at
    each of `fpir_targets` (the threshold set on the non-mated probes), the DET curve, and the gallery-size
    sweep (`sweep_sizes`: 10 people up to the most that leave strangers, every image of the folder, each
    size's threshold from the policy in force; `siamface.evaluation.metrics.gallery_sweep`). The verification figures of the
    report are those of every probe x gallery-template comparison (genuine = same identity).
    """
    t0 = time.perf_counter()
    try:
        split = open_set_split(root, n_gallery_per_id=gallery_per_id, unknown_fraction=unknown_fraction, seed=seed)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if not split.probes:
        raise ConfigError(f"{root}: the split leaves no probe (every identity has <= {gallery_per_id} images)")
    facts = _pipeline_facts(pipeline, threshold, identify=True, size=(len(split.gallery), len(split.gallery_files)))
    policy = pipeline.thresholds.given(threshold)
    g_files = [f for f, _ in split.gallery_files]
    g_ids = np.array([k for _, k in split.gallery_files])
    p_files = [f for f, _ in split.probes]
    p_ids = np.array(split.probe_ids)
    run = embed_images(pipeline, g_files + p_files, cache=cache, progress=progress)
    dim = pipeline.encoder.info.embedding_size
    G, P = _matrix(run.outcomes, g_files, dim), _matrix(run.outcomes, p_files, dim)
    sim = np.clip(P.astype(np.float64) @ G.astype(np.float64).T, -1.0, 1.0)  # NaN rows/cols for failures
    thr = facts["threshold"]
    ident = IdentificationResult(
        n_gallery_ids=len(split.gallery),
        n_gallery_images=len(g_files),
        n_gallery_failures=int(np.isnan(G[:, 0]).sum()),
        n_probes=len(p_files),
        n_mated=int(np.isin(p_ids, g_ids).sum()),
        n_non_mated=int((~np.isin(p_ids, g_ids)).sum()),
        n_probe_failures=int(np.isnan(P[:, 0]).sum()),
        gallery_per_id=int(gallery_per_id),
        unknown_fraction=float(unknown_fraction),
        seed=int(seed),
        rank1=rank_k_rate(sim, p_ids, g_ids, 1),
        rank5=rank_k_rate(sim, p_ids, g_ids, 5),
        open_set=open_set_rates(sim, p_ids, g_ids, thr, rank=1),
        rank10=rank_k_rate(sim, p_ids, g_ids, 10),
        at_fpir=[fnir_at_fpir(sim, p_ids, g_ids, f) for f in fpir_targets] if (~np.isin(p_ids, g_ids)).any() else [],
        sweep=gallery_sweep(
            np.concatenate([G, P]),
            np.concatenate([g_ids, p_ids]),
            lambda people, templates: policy.for_gallery(people, templates).identify.value,
            sweep_sizes(len(np.unique(np.concatenate([g_ids, p_ids])))),
            per_person=gallery_per_id,
            target=policy.fpir.fpir if policy.fpir is not None else None,
            seed=seed,
        ),
        fpir_target=policy.fpir.fpir if policy.fpir is not None else None,
        fpir_targets=list(fpir_targets),
        det=det_curve(sim, p_ids, g_ids) if (~np.isin(p_ids, g_ids)).any() else None,
    )
    labels = (p_ids[:, None] == g_ids[None, :]).ravel()
    scores = sim.ravel()
    root_p = Path(root).resolve()
    opts = {"seed": seed, "gallery_per_id": gallery_per_id, "unknown_fraction": unknown_fraction, **(options or {})}
    return EvaluationReport(
        protocol="identify",
        dataset=str(root_p),
        **facts,
        **_image_facts(run, root_p),
        **_verification(scores, labels, thr, far_targets),
        identification=ident,
        seconds=time.perf_counter() - t0,
        created=_now(),
        options=opts,
        scores=scores,
        labels=labels,
    )


def sweep_sizes(n_ids: int) -> list[int]:
    """The gallery sizes of the sweep: 10, 20, 50, 100, 200, 500, ... below `n_ids` - 1, and the largest,
    `n_ids` - 1 (a stranger's identity is always left; none below 2 people)."""
    sizes = [m * 10**e for e in range(1, 7) for m in (1, 2, 5) if m * 10**e < n_ids - 1]
    return sizes + [n_ids - 1] if n_ids - 1 >= 2 else sizes


def _distinct_pairs(same: list, different: list) -> tuple[list, list, int]:
    """The two pair lists with each pair once (``a b`` and ``b a`` are one comparison) and without an image
    paired with itself, and how many were dropped: a repeated pair is one comparison, and counting it again
    would let a calibration claim a FAR its data cannot measure (one impostor pair listed 1,000 times is not
    1,000 impostor comparisons). `ConfigError` for a pair listed as both the same person and different people."""
    label_of: dict[frozenset, int] = {}
    kept: tuple[list, list] = ([], [])  # different, same
    for label, pairs in ((1, same), (0, different)):
        for a, b in pairs:
            key = frozenset((os.path.normpath(a), os.path.normpath(b)))
            if key in label_of:
                if label_of[key] != label:
                    raise ConfigError(f"the pair {a} {b} is listed as both the same person and different people")
                continue
            label_of[key] = label
            if len(key) == 2:
                kept[label].append((a, b))
    dropped = len(same) + len(different) - len(kept[0]) - len(kept[1])
    if dropped:
        log.warning("%d pair(s) repeated or of an image with itself left out: each comparison counts once", dropped)
    return kept[1], kept[0], dropped


def _read(reader: Callable, path: str | os.PathLike, *args) -> Any:
    try:
        return reader(path, *args)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
