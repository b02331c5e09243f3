"""What one protocol run measured: `EvaluationReport` (``to_dict()`` is ``report.json``), its readable
summary (`format_report`) and its files (`write_outputs`: report.json, scores.csv, roc.png, scores.png).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write_bytes
from ..errors import ConfigError
from .metrics import (
    BestThreshold,
    Confusion,
    KFoldResult,
    OpenSetResult,
    RankResult,
    SweepPoint,
    TarAtFar,
    roc_curve,
)

__all__ = ["FAILURE_POLICY", "EvaluationReport", "IdentificationResult", "format_report", "write_outputs"]

FAILURE_POLICY = (
    "an image where no face was found (or that could not be decoded) gives every pair it is in "
    "the score NaN: a non-match at every threshold, i.e. a false reject for a genuine pair and a "
    "correct reject for an impostor pair; those pairs stay in every denominator"
)


@dataclass(frozen=True)
class IdentificationResult:
    """Open-set 1:N figures: closed-set rank-1/5/10 over mated probes, FPIR/FNIR at the threshold in force
    (for this gallery's size), FNIR at FPIR targets, the DET curve's points (`det`: FPIR, FNIR; not in the
    JSON) and the gallery-size sweep (FPIR measured against the target at each size)."""

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
    rank10: RankResult | None = None
    at_fpir: list[OpenSetResult] = field(default_factory=list)
    sweep: list[SweepPoint] = field(default_factory=list)
    fpir_target: float | None = None
    fpir_targets: list[float] = field(default_factory=list)  # the targets of `at_fpir`, in order
    det: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(dataclasses.replace(self, det=None))
        out.pop("det")
        return out


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


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


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
        # each file whole under a random name, renamed into place: never through a link planted at its name
        atomic_write_bytes(out / "report.json", (json.dumps(report.to_dict(), indent=2) + "\n").encode())
        if report.pairs is not None:
            text = io.StringIO(newline="")
            w = csv.writer(text)
            w.writerow(["a", "b", "label", "score"])
            for (a, b), lab, s in zip(report.pairs, report.labels, report.scores):
                w.writerow([a, b, int(lab), "" if math.isnan(s) else f"{s:.6f}"])
            atomic_write_bytes(out / "scores.csv", text.getvalue().encode())
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
    ident = report.identification
    if ident is not None and ident.det is not None and len(ident.det[0]) > 1:
        written.append(P.plot_det(*ident.det, out / "det.png", label=who, title=f"DET: {name} (1:N), {who}"))
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
        rank10 = f"   rank-10 {_pct(i.rank10.rate)}" if i.rank10 is not None else ""
        lines.append(
            f"    rank-1 {_pct(i.rank1.rate)}   rank-5 {_pct(i.rank5.rate)}{rank10}   (closed set, mated probes)"
        )
        lines.append(
            f"    at threshold {o.threshold:.4f}: FPIR {_pct(o.fpir)} ({o.n_false_positives}/{o.n_non_mated})"
            f"   FNIR {_pct(o.fnir)} ({o.n_misses}/{o.n_mated})"
        )
        for target, a in zip(i.fpir_targets, i.at_fpir):
            if a.n_non_mated * target < 1:
                lines.append(
                    f"    FNIR at FPIR {_pct(target)}: n/a (too little data: needs >= {round(1 / target):,} "
                    f"non-mated probes, has {a.n_non_mated})"
                )
            else:
                lines.append(
                    f"    FNIR {_pct(a.fnir)} at FPIR {_pct(target)} (measured {_pct(a.fpir)}, threshold "
                    f"{_num(a.threshold)})"
                )
        if i.sweep:
            target = f"target {_pct(i.fpir_target)}" if i.fpir_target is not None else "a fixed threshold"
            lines.append(f"    gallery-size sweep ({target}; every other face a stranger's search):")
            for p in i.sweep:
                lines.append(
                    f"      {p.people:6d} people / {p.templates:6d} templates: threshold {p.threshold:.4f}  "
                    f"FPIR {_pct(p.fpir)} of {p.n_non_mated}   FNIR {_pct(p.fnir)} of {p.n_mated}"
                )
    lines.append(f"  time         {r.seconds:.1f} s")
    return "\n".join(lines)
