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
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import ConfigError, ImageError, NoFaceError
from ..thresholds import Calibration
from .cache import EmbeddingCache, detector_key, detector_options, file_sha256, model_key
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
    confusion_at,
    eer_from_roc,
    lfw_10fold,
    open_set_rates,
    rank_k_rate,
    roc_curve,
    tar_at_far,
)
from .protocols import flatten_folds, make_pairs, open_set_split, read_lfw_pairs, read_pairs_file

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

FAILURE_POLICY = (
    "an image where no face was found (or that could not be decoded) gives every pair it is in "
    "the score NaN: a non-match at every threshold, i.e. a false reject for a genuine pair and a "
    "correct reject for an impostor pair; those pairs stay in every denominator"
)


# --------------------------------------------------------------------------------------------------- #
# progress bar
# --------------------------------------------------------------------------------------------------- #
class Progress:
    """A one-line progress bar on stderr; silent when disabled or when the stream is not a terminal."""

    def __init__(
        self,
        total: int,
        label: str = "",
        stream: TextIO | None = None,
        enabled: bool = True,
        width: int = 28,
        interval: float = 0.1,
    ) -> None:
        self.total = int(total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(enabled) and self.total > 0 and bool(isatty and isatty())
        self.width = width
        self.interval = interval
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(1.0, self.done / self.total)
        filled = int(round(frac * self.width))
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {self.done}/{self.total}  {rate:5.1f}/s  eta {int(eta) // 60}:{int(eta) % 60:02d} "
        )
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------- #
# embedding every distinct image once
# --------------------------------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ImageOutcome:
    """What became of one image: its embedding (None on failure), faces found, why it failed, cache hit."""

    embedding: np.ndarray | None
    n_faces: int = 0
    error: str | None = None  # None, "no face" or "unreadable: <reason>"
    cached: bool = False


@dataclass
class EmbeddingRun:
    outcomes: dict[Path, ImageOutcome]
    n_cached: int
    n_computed: int
    seconds: float


def embed_images(
    pipeline: Any,
    paths: Iterable[str | os.PathLike],
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    face: str = "largest",
) -> EmbeddingRun:
    """Embed one face of each distinct image (cache first), the largest or the one nearest the centre
    (`face`); never raises for a faceless image.

    A missing file is an error (`ConfigError`, naming how many and the first few): a wrong ``--root`` must
    not pass for a 100% failure rate. An undecodable file is a failure (``error="unreadable: ..."``).
    """
    t0 = time.perf_counter()
    unique = list(dict.fromkeys(Path(p) for p in paths))
    missing = [p for p in unique if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise ConfigError(f"{len(missing)} of {len(unique)} images not found (e.g. {shown}); check the dataset root")
    outcomes: dict[Path, ImageOutcome] = {}
    keys: dict[Path, str] = {}
    hits: dict[str, Any] = {}
    if cache is not None:
        mkey, dkey = model_key(pipeline.encoder.info), detector_key(pipeline.detector)
        if face != "largest":  # the entries made before the choice existed are those of the largest face
            dkey += f" face={face}"
        for p in unique:
            try:
                keys[p] = file_sha256(p)
            except OSError as exc:
                outcomes[p] = ImageOutcome(None, 0, f"unreadable: {exc.strerror or exc}")
        hits = cache.get_many(keys.values(), mkey, dkey)
        for p, sha in keys.items():
            entry = hits.get(sha)
            if entry is not None:
                outcomes[p] = ImageOutcome(
                    entry.embedding, entry.n_faces, None if entry.found else "no face", cached=True
                )
    todo = [p for p in unique if p not in outcomes]
    n_cached = sum(1 for o in outcomes.values() if o.cached)
    computed = 0
    if todo:
        label = f"embedding {len(todo)} images"
        with Progress(len(todo), label, stream=stream, enabled=progress) as bar:
            try:
                for p in todo:
                    outcome = _embed_one(pipeline, p, face)
                    outcomes[p] = outcome
                    computed += 1
                    if cache is not None and p in keys and (outcome.error in (None, "no face")):
                        cache.put(keys[p], mkey, dkey, outcome.embedding, outcome.n_faces)
                    bar.update()
            finally:
                if cache is not None:
                    cache.flush()
    ordered = {p: outcomes[p] for p in unique}
    return EmbeddingRun(ordered, n_cached, computed, time.perf_counter() - t0)


def _embed_one(pipeline: Any, path: Path, face: str) -> ImageOutcome:
    try:
        faces, n = pipeline.embed_largest(path) if face == "largest" else pipeline.embed_one(path, face)
    except NoFaceError:
        return ImageOutcome(None, 0, "no face")
    except ImageError as exc:
        return ImageOutcome(None, 0, f"unreadable: {exc.reason}")
    return ImageOutcome(np.asarray(faces.embeddings[0], np.float32), int(n), None)


def _matrix(outcomes: dict[Path, ImageOutcome], files: Sequence[Path], dim: int) -> np.ndarray:
    """(n, dim) embeddings of `files`, NaN rows for failures."""
    m = np.full((len(files), dim), np.nan, np.float32)
    for i, f in enumerate(files):
        e = outcomes[Path(f)].embedding
        if e is not None:
            m[i] = e
    return m


# --------------------------------------------------------------------------------------------------- #
# the report
# --------------------------------------------------------------------------------------------------- #
@dataclass(frozen=True)
class IdentificationResult:
    """Open-set 1:N figures: closed-set rank-1/rank-5 over mated probes, FPIR/FNIR at the threshold."""

    n_gallery_ids: int
    n_gallery_images: int
    n_gallery_failures: int
    n_probes: int
    n_mated: int
    n_non_mated: int
    n_probe_failures: int
    gallery_per_id: int
    unknown_fraction: float
    seed: int
    rank1: RankResult
    rank5: RankResult
    open_set: OpenSetResult

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvaluationReport:
    """Everything measured by one protocol run. ``to_dict()`` is what ``report.json`` holds."""

    protocol: str  # "lfw", "folder", "pairs" or "identify"
    dataset: str
    model: str
    model_version: str
    detector: str
    detector_options: dict[str, Any]
    threshold: float  # the threshold in force (explicit, calibrated or model default)
    threshold_source: str
    # images
    n_images: int
    n_failures: int  # images with no face found or undecodable
    n_unreadable: int
    failed_images: list[str]
    n_multi_face: int  # images with several faces (`face` says which was used)
    n_from_cache: int
    n_computed: int
    # comparisons
    n_pairs: int
    n_genuine: int
    n_impostor: int
    n_failed_pairs: int
    n_failed_genuine: int
    n_failed_impostor: int
    at_threshold: Confusion
    at_threshold_without_failures: Confusion | None
    auc: float
    eer: float
    eer_threshold: float
    tar_at_far: list[TarAtFar]
    best_accuracy: BestThreshold
    kfold: KFoldResult | None = None
    identification: IdentificationResult | None = None
    failure_policy: str = FAILURE_POLICY
    seconds: float = 0.0
    created: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    face: str = "largest"  # the face used when an image has several: "largest" or "centre"
    # not in to_dict(): the raw material of the plots and of calibration
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    pairs: list[tuple[str, str]] | None = field(default=None, repr=False)

    @property
    def genuine_scores(self) -> np.ndarray:
        return self.scores[self.labels]

    @property
    def impostor_scores(self) -> np.ndarray:
        return self.scores[~self.labels]

    def roc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return roc_curve(self.scores, self.labels)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "protocol": self.protocol,
            "dataset": self.dataset,
            "created": self.created,
            "model": self.model,
            "model_version": self.model_version,
            "detector": self.detector,
            "detector_options": self.detector_options,
            "options": self.options,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "images": {
                "n": self.n_images,
                "failures": self.n_failures,
                "unreadable": self.n_unreadable,
                "failed": self.failed_images,
                "several_faces": self.n_multi_face,
                "face_used": self.face,
                "from_cache": self.n_from_cache,
                "computed": self.n_computed,
            },
            "comparisons": {
                "n": self.n_pairs,
                "genuine": self.n_genuine,
                "impostor": self.n_impostor,
                "failed": self.n_failed_pairs,
                "failed_genuine": self.n_failed_genuine,
                "failed_impostor": self.n_failed_impostor,
            },
            "failure_policy": self.failure_policy,
            "at_threshold": self.at_threshold.to_dict(),
            "at_threshold_without_failures": (
                self.at_threshold_without_failures.to_dict() if self.at_threshold_without_failures else None
            ),
            "roc_auc": self.auc,
            "eer": {"rate": self.eer, "threshold": self.eer_threshold},
            "tar_at_far": [_tar_dict(t) for t in self.tar_at_far],
            "best_accuracy": {"threshold": self.best_accuracy.threshold, "accuracy": self.best_accuracy.accuracy},
            "kfold": self.kfold.to_dict() if self.kfold else None,
            "identification": self.identification.to_dict() if self.identification else None,
            "seconds": round(self.seconds, 3),
        }
        return _json_safe(d)


def _tar_dict(t: TarAtFar) -> dict[str, Any]:
    d = t._asdict()
    if not t.supported:
        need = math.ceil(1.0 / t.far_target - 1e-9)
        d["note"] = (
            f"not supported: FAR {t.far_target:g} needs at least {need:,} impostor comparisons, "
            f"this data has {t.n_impostors:,}"
        )
    return d


def _json_safe(value: Any) -> Any:
    """NaN and +-inf become None (JSON has neither); tuples become lists; NumPy scalars become Python."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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


def _pipeline_facts(pipeline: Any, threshold: float | None, identify: bool = False) -> dict[str, Any]:
    """Model, detector and the threshold in force (`identify`: the 1:N one)."""
    info = pipeline.encoder.info
    det = pipeline.detector
    thresholds = pipeline.thresholds.given(threshold)
    chosen = thresholds.identify if identify else thresholds.verify
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
    same = _read(read_pairs_file, same_file, root)
    diff = _read(read_pairs_file, different_file, root)
    labels = np.array([1] * len(same) + [0] * len(diff))
    options = {
        "pairs_same": str(Path(same_file).resolve()),
        "pairs_different": str(Path(different_file).resolve()),
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
    options: dict[str, Any] | None = None,
) -> EvaluationReport:
    """Open-set 1:N: ``unknown_fraction`` of the identities are left out of the gallery (their images are
    non-mated probes); every other identity enrols ``gallery_per_id`` images, the rest are mated probes.

    ``report.identification``: rank-1 and rank-5 (closed set: mated probes; an identity scores its best
    template), FPIR (non-mated probes whose best score >= threshold) and FNIR (mated probes whose identity
    is not rank 1 with a score >= threshold) at the threshold in force. The verification figures of the
    report are those of every probe x gallery-template comparison (genuine = same identity).
    """
    t0 = time.perf_counter()
    try:
        split = open_set_split(root, n_gallery_per_id=gallery_per_id, unknown_fraction=unknown_fraction, seed=seed)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if not split.probes:
        raise ConfigError(f"{root}: the split leaves no probe (every identity has <= {gallery_per_id} images)")
    facts = _pipeline_facts(pipeline, threshold, identify=True)
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


def _read(reader: Callable, path: str | os.PathLike, *args) -> Any:
    try:
        return reader(path, *args)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------- #
# calibration
# --------------------------------------------------------------------------------------------------- #
class UnsupportedTargetError(ConfigError):
    """A FAR target finer than the data can measure (fewer than 1/FAR impostor comparisons)."""


def parse_target(text: str) -> tuple[str, float | None]:
    """``"far=0.001"`` -> ``("far=0.001", 0.001)``; ``"eer"``/``"best-accuracy"`` -> ``(name, None)``."""
    t = text.strip().lower().replace("_", "-")
    if t in ("eer", "best-accuracy"):
        return t, None
    if t == "accuracy":
        return "best-accuracy", None
    if t.startswith("far="):
        try:
            far = float(t[4:])
        except ValueError:
            far = math.nan
        if not 0.0 < far < 1.0:
            raise ConfigError(f"--target {text!r}: the FAR must be a number between 0 and 1, e.g. far=0.001")
        return f"far={far:g}", far
    raise ConfigError(f"--target {text!r}: expected far=RATE (e.g. far=0.001), eer or best-accuracy")


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    criterion: str
    far: float
    frr: float
    supported: bool
    n_genuine: int
    n_impostor: int
    note: str = ""


def choose_threshold(scores: np.ndarray, labels: np.ndarray, target: str, force: bool = False) -> ThresholdChoice:
    """The threshold meeting ``target`` (``far=X``, ``eer``, ``best-accuracy``) on these comparisons.

    ``far=X``: the smallest threshold whose FAR <= X on this data (the highest TAR allowed). Refused with
    `UnsupportedTargetError` when the data has fewer than 1/X impostor comparisons, unless ``force``.
    """
    criterion, far_target = parse_target(target)
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    n_gen, n_imp = int(y.sum()), int((~y).sum())
    if n_gen == 0 or n_imp == 0:
        raise ConfigError(
            f"calibration needs genuine and impostor comparisons; this data has {n_gen} genuine and {n_imp} impostor"
        )
    if not np.isfinite(s).any():
        raise ConfigError("no comparison could be scored (no face found in any image)")
    note = ""
    supported = True
    if far_target is not None:
        r = tar_at_far(s, y, far_target)
        supported = r.supported
        if not supported:
            need = math.ceil(1.0 / far_target - 1e-9)
            finest = _finest_far(n_imp)
            msg = (
                f"target {criterion} cannot be measured on this data: it needs at least {need:,} impostor "
                f"comparisons and there are {n_imp:,} (the finest FAR this data supports is {finest}). "
                "Use more impostor pairs (e.g. --impostors N for a folder), a coarser target, or --force "
                "to save it anyway"
            )
            if not force:
                raise UnsupportedTargetError(msg)
            note = f"forced: {n_imp:,} impostor comparisons < {need:,} needed for FAR {far_target:g}"
        thr = r.threshold
        if not math.isfinite(thr):
            raise ConfigError(
                f"no threshold reaches FAR <= {far_target:g} on this data (the highest-scoring "
                "comparison is an impostor)"
            )
    elif criterion == "eer":
        far, tar, t = roc_curve(s, y)
        _, thr = eer_from_roc(far, tar, t)
    else:
        thr = best_accuracy_threshold(s, y).threshold
    if not math.isfinite(thr):
        raise ConfigError(f"no finite threshold found for {criterion} on this data")
    c = confusion_at(s, y, thr)
    return ThresholdChoice(float(thr), criterion, c.far, c.frr, supported, n_gen, n_imp, note)


def _finest_far(n_imp: int) -> str:
    """The smallest power-of-ten FAR target that n_imp impostor comparisons support (n_imp * FAR >= 1)."""
    exp = math.floor(math.log10(n_imp) + 1e-9) if n_imp >= 1 else 0
    return f"{10.0**-exp:g}" if exp >= 1 else "none (fewer than 10 impostor comparisons)"


def calibration_from_report(report: EvaluationReport, target: str, force: bool = False) -> Calibration:
    """A `Calibration` (model, detector, criterion, achieved FAR/FRR, dataset, counts, date) from a report."""
    choice = choose_threshold(report.scores, report.labels, target, force=force)
    return Calibration(
        model=report.model,
        threshold=round(choice.threshold, 6),
        criterion=choice.criterion,
        far=choice.far,
        frr=choice.frr,
        dataset=report.dataset,
        detector=report.detector,
        n_genuine=choice.n_genuine,
        n_impostor=choice.n_impostor,
        created=_now(),
    )


def calibrate(
    report: EvaluationReport, target: str, path: str | os.PathLike | None = None, force: bool = False
) -> tuple[Calibration, Path]:
    """Choose the threshold on the report's data and save it (default: the user calibration file)."""
    from ..thresholds import save_calibration

    cal = calibration_from_report(report, target, force=force)
    try:
        written = save_calibration(cal, Path(path) if path is not None else None)
    except OSError as exc:
        raise ConfigError(f"cannot write the calibration file: {exc}") from None
    return cal, written


# --------------------------------------------------------------------------------------------------- #
# output
# --------------------------------------------------------------------------------------------------- #
def write_outputs(
    report: EvaluationReport,
    out_dir: str | os.PathLike,
    plots: bool = True,
) -> tuple[list[Path], str | None]:
    """Write ``report.json``, ``scores.csv`` (pair protocols), ``roc.png`` and ``scores.png`` into out_dir.

    Returns ``(files written, why plots were skipped or None)``; plots need matplotlib (extra ``plot``).
    """
    import json

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "report.json"]
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        if report.pairs is not None:
            with open(out / "scores.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["a", "b", "label", "score"])
                for (a, b), lab, s in zip(report.pairs, report.labels, report.scores):
                    w.writerow([a, b, int(lab), "" if math.isnan(s) else f"{s:.6f}"])
            written.append(out / "scores.csv")
    except OSError as exc:
        raise ConfigError(f"cannot write into {out}: {exc}") from None
    if not plots:
        return written, "plots not requested"
    try:
        from . import plots as P

        P._pyplot()
    except ImportError:
        return written, "plots skipped: matplotlib is not installed (pip install 'siamface[plot]')"
    far, tar, _ = report.roc()
    who = f"{report.model} + {report.detector}"
    name = Path(report.dataset).name or report.dataset
    if np.isfinite(far).all() and np.isfinite(tar).all():
        written.append(
            P.plot_roc(far, tar, out / "roc.png", label=who, title=f"ROC: {name} ({report.protocol}), {who}")
        )
    written.append(
        P.plot_score_histograms(
            report.genuine_scores,
            report.impostor_scores,
            report.threshold,
            out / "scores.png",
            title=f"Scores: {name} ({report.protocol}), {who}",
        )
    )
    return written, None


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _num(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def format_report(r: EvaluationReport) -> str:
    """A readable summary table of a report."""
    lines = []
    what = {
        "lfw": "LFW pairs",
        "folder": "folder-per-person pairs",
        "pairs": "labelled pair lists",
        "identify": "open-set identification (1:N)",
    }.get(r.protocol, r.protocol)
    opts = ", ".join(f"{k}={v}" for k, v in r.detector_options.items())
    lines.append(f"{what} on {r.dataset}")
    lines.append(f"  model {r.model} ({r.model_version}), detector {r.detector} ({opts})")
    shown = ", ".join(r.failed_images[:5]) + (", ..." if len(r.failed_images) > 5 else "")
    fail = f"{r.n_failures} with no usable face" + (f": {shown}" if r.failed_images else "")
    used = "the largest" if r.face == "largest" else "the one nearest the centre"
    lines.append(f"  images       {r.n_images:,} ({fail}; {r.n_multi_face} with several faces, {used} used)")
    lines.append(f"               {r.n_from_cache:,} embeddings from the cache, {r.n_computed:,} computed")
    kind = "comparisons" if r.protocol == "identify" else "pairs"
    lines.append(
        f"  {kind:<12} {r.n_pairs:,} = {r.n_genuine:,} genuine + {r.n_impostor:,} impostor; "
        f"{r.n_failed_pairs:,} involve a failed image ({r.n_failed_genuine:,} genuine, "
        f"{r.n_failed_impostor:,} impostor)"
    )
    if r.n_failed_pairs:
        lines.append(
            "               failures are scored as non-matches (false reject if genuine, correct "
            "reject if impostor), kept in every rate"
        )
    c = r.at_threshold
    lines.append(f"  at threshold {r.threshold:.4f}  ({r.threshold_source})")
    lines.append(
        f"    accuracy {_pct(c.accuracy):>8}   precision {_pct(c.precision):>8}   recall {_pct(c.recall):>8}"
        f"   F1 {_pct(c.f1):>8}"
    )
    lines.append(
        f"    FAR      {_pct(c.far):>8}   FRR       {_pct(c.frr):>8}   "
        f"(tp {c.tp:,}, fp {c.fp:,}, tn {c.tn:,}, fn {c.fn:,})"
    )
    if r.at_threshold_without_failures is not None:
        w = r.at_threshold_without_failures
        lines.append(
            f"    without the failed {kind}: accuracy {_pct(w.accuracy)}, FAR {_pct(w.far)}, FRR {_pct(w.frr)}"
        )
    lines.append(f"  ROC AUC      {_num(r.auc)}")
    lines.append(f"  EER          {_pct(r.eer)} at threshold {_num(r.eer_threshold)}")
    lines.append(f"  best accuracy {_pct(r.best_accuracy.accuracy)} at threshold {_num(r.best_accuracy.threshold)}")
    for t in r.tar_at_far:
        head = f"  TAR @ FAR {t.far_target:<7g}"
        if t.supported:
            lines.append(
                f"{head}{_pct(t.tar):>8}  (threshold {_num(t.threshold)}, measured FAR {_pct(t.achieved_far)})"
            )
        else:
            need = math.ceil(1.0 / t.far_target - 1e-9)
            lines.append(f"{head}     n/a  (too little data: needs >= {need:,} impostor {kind}, has {t.n_impostors:,})")
    if r.kfold is not None:
        k = r.kfold
        lines.append(
            f"  {len(k.accuracies)}-fold accuracy {_pct(k.mean)} +- {_pct(k.std)} "
            f"(threshold chosen on the other folds: {min(k.thresholds):.4f}..{max(k.thresholds):.4f})"
        )
    if r.identification is not None:
        i = r.identification
        o = i.open_set
        lines.append(
            f"  identification: gallery {i.n_gallery_ids} identities / {i.n_gallery_images} images "
            f"({i.n_gallery_failures} failed), probes {i.n_probes} = {i.n_mated} mated + "
            f"{i.n_non_mated} non-mated ({i.n_probe_failures} failed)"
        )
        lines.append(f"    rank-1 {_pct(i.rank1.rate)}   rank-5 {_pct(i.rank5.rate)}   (closed set, mated probes)")
        lines.append(
            f"    at threshold {o.threshold:.4f}: FPIR {_pct(o.fpir)} ({o.n_false_positives}/{o.n_non_mated})"
            f"   FNIR {_pct(o.fnir)} ({o.n_misses}/{o.n_mated})"
        )
    lines.append(f"  time         {r.seconds:.1f} s")
    return "\n".join(lines)
