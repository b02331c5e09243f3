"""Calibration: the threshold meeting a target (``far=X``, ``eer``, ``best-accuracy``, ``fpir=X``) on a report's
comparisons, and the calibration file it is saved to (read back by `siamface.thresholds`).

``fpir=X`` calibrates 1:N by FPIR: the impostor tail of the data (`siamface.tails.fit_tail`) is saved with the
target, and the 1:N threshold in force then follows a gallery's size (`siamface.decision.fpir_threshold`);
the 1:1 threshold saved is the tail's score at a per-comparison rate of X (a gallery of one)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..tails import ImpostorTail, fit_tail
from ..thresholds import Calibration
from .metrics import best_accuracy_threshold, confusion_at, eer_from_roc, roc_curve, tar_at_far
from .report import EvaluationReport, _now

__all__ = [
    "ThresholdChoice",
    "UnsupportedTargetError",
    "calibrate",
    "calibration_from_report",
    "check_calibration",
    "choose_threshold",
    "parse_target",
]


#: The largest share of its own impostor comparisons a calibrated threshold may let in (an EER or
#: best-accuracy point on hard or poisoned data can sit far lower than any operating point): 5 %.
MAX_CALIBRATED_FAR = 0.05


class UnsupportedTargetError(ConfigError):
    """A FAR target finer than the data can measure (fewer than 1/FAR impostor comparisons)."""


def parse_target(text: str) -> tuple[str, float | None]:
    """``"far=0.001"`` -> ``("far=0.001", 0.001)``, ``"fpir=0.01"`` -> ``("fpir=0.01", 0.01)``;
    ``"eer"``/``"best-accuracy"`` -> ``(name, None)``."""
    t = text.strip().lower().replace("_", "-")
    if t in ("eer", "best-accuracy"):
        return t, None
    if t == "accuracy":
        return "best-accuracy", None
    for name, example in (("far", "0.001"), ("fpir", "0.01")):
        if t.startswith(f"{name}="):
            try:
                rate = float(t[len(name) + 1 :])
            except ValueError:
                rate = math.nan
            if not 0.0 < rate < 1.0:
                raise ConfigError(
                    f"--target {text!r}: the {name.upper()} must be a number between 0 and 1, e.g. {name}={example}"
                )
            return f"{name}={rate:g}", rate
    raise ConfigError(
        f"--target {text!r}: expected far=RATE (e.g. far=0.001), fpir=RATE (e.g. fpir=0.01), eer or best-accuracy"
    )


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
    tail: ImpostorTail | None = None  # fpir=X: the impostor tail measured


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
    tail = None
    if criterion.startswith("fpir="):
        tail = fit_tail(s[~y & np.isfinite(s)], "calibration")
        thr = tail.score_at(far_target)
    elif far_target is not None:
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
    return ThresholdChoice(float(thr), criterion, c.far, c.frr, supported, n_gen, n_imp, note, tail)


def _finest_far(n_imp: int) -> str:
    """The smallest power-of-ten FAR target that n_imp impostor comparisons support (n_imp * FAR >= 1)."""
    exp = math.floor(math.log10(n_imp) + 1e-9) if n_imp >= 1 else 0
    return f"{10.0**-exp:g}" if exp >= 1 else "none (fewer than 10 impostor comparisons)"


def calibration_from_report(report: EvaluationReport, target: str, force: bool = False) -> Calibration:
    """A `Calibration` (model, detector, criterion, achieved FAR/FRR, dataset, counts, date) from a report."""
    choice = choose_threshold(report.scores, report.labels, target, force=force)
    return Calibration(
        model=report.model,
        model_version=report.model_version,
        threshold=round(choice.threshold, 6),
        criterion=choice.criterion,
        far=choice.far,
        frr=choice.frr,
        dataset=report.dataset,
        detector=report.detector,
        n_genuine=choice.n_genuine,
        n_impostor=choice.n_impostor,
        created=_now(),
        fpir=float(choice.criterion[5:]) if choice.tail is not None else None,
        tail=dict(choice.tail.to_dict(), source=f"{report.dataset}: {choice.n_impostor:,} impostor comparisons")
        if choice.tail is not None
        else None,
    )


def check_calibration(cal: Calibration, info=None) -> None:
    """`ConfigError` unless `cal` may be written: its threshold in the model's plausible range
    (`siamface.decision.check_threshold`, `info` the model's) and, on its own impostor data, letting at most
    `MAX_CALIBRATED_FAR` of the strangers in."""
    from ..decision import check_threshold

    check_threshold(cal.threshold, info, f"calibrate: the threshold chosen for {cal.criterion}")
    if cal.far > MAX_CALIBRATED_FAR:
        raise ConfigError(
            f"calibrate: the threshold chosen for {cal.criterion} ({cal.threshold:g}) lets {cal.far:.2%} of this "
            f"data's {cal.n_impostor:,} impostor comparisons in, more than the {MAX_CALIBRATED_FAR:.0%} a "
            "calibration may; nothing was written (choose a FAR target, e.g. --target far=0.001)"
        )


def calibrate(
    report: EvaluationReport,
    target: str,
    path: str | os.PathLike | None = None,
    force: bool = False,
    info=None,
) -> tuple[Calibration, Path]:
    """Choose the threshold on the report's data, check it (`check_calibration`; `info`: the model's
    `ModelInfo`) and save it (default: the user calibration file)."""
    from ..thresholds import save_calibration

    cal = calibration_from_report(report, target, force=force)
    check_calibration(cal, info)
    try:
        written = save_calibration(cal, Path(path) if path is not None else None)
    except OSError as exc:
        raise ConfigError(f"cannot write the calibration file: {exc}") from None
    return cal, written
