"""PNG plots of verification results (matplotlib, optional dependency).

matplotlib is imported lazily inside each function with the non-interactive
Agg backend, so importing this module never requires it; calling a function
without matplotlib installed raises ``ImportError`` with an install hint.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write_bytes
from .metrics import auc, eer_from_roc

__all__ = ["plot_roc", "plot_score_histograms"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib, an optional dependency: pip install matplotlib") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def literal(text: object) -> str:
    """`text` as matplotlib should show it, as written: a ``$`` would start mathtext, and text such as a
    folder's or a model file's name (``my$\\foo$set``) then failed to parse when the figure was drawn, a
    traceback after the report was printed, the plots never written."""
    return str(text).replace("$", r"\$")


def save_figure(fig: Any, path: str | os.PathLike, **options: Any) -> Path:
    """Write a matplotlib figure to `path` as PNG, whole, under a random temporary name renamed into place:
    never through a link planted at `path` in a shared output folder (``savefig(path)`` overwrote its target)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **options)
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out


def plot_roc(
    far: Any,
    tar: Any,
    path: str | os.PathLike,
    *,
    label: str | None = None,
    title: str = "ROC (verification)",
    mark_eer: bool = True,
    far_targets: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1),
    dpi: int = 120,
) -> Path:
    """Write a ROC curve (TAR against FAR, FAR on a log axis) to ``path`` (PNG).

    ``far``/``tar`` are as returned by :func:`~siamface.evaluation.metrics.roc_curve`.
    Points with FAR = 0 cannot be drawn on a log axis; the axis starts at the
    decade below the smallest positive FAR (at least down to 1e-4), and FAR = 0
    points are drawn at that left edge. The EER point is marked and quoted in
    the legend with the AUC; dotted lines show the usual FAR targets within
    range. Returns the path.
    """
    plt = _pyplot()
    x = np.asarray(far, dtype=np.float64)
    y = np.asarray(tar, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError("far and tar must be 1-D arrays of equal length (>= 2 points)")
    pos = x[(x > 0) & ~np.isnan(x)]
    lo = min(1e-4, float(pos.min())) if pos.size else 1e-4
    lo = 10 ** math.floor(math.log10(lo))
    keep = ~(np.isnan(x) | np.isnan(y))
    xs = np.clip(x[keep], lo, 1.0)

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    try:
        name = literal(label) if label else "ROC"
        if keep.all() and np.all(np.diff(x) >= 0):
            name += f" (AUC = {auc(x, y):.4f})"
        ax.plot(xs, y[keep], drawstyle="steps-post", lw=2, color="C0", label=name)
        for ft in far_targets:
            if lo < ft < 1:
                ax.axvline(ft, color="0.6", ls=":", lw=1)
        if mark_eer:
            e, _ = eer_from_roc(x, y)
            if not math.isnan(e):
                ax.plot([max(e, lo)], [1 - e], "o", color="C3", ms=8, label=f"EER = {100 * e:.2f}%")
        ax.set_xscale("log")
        ax.set_xlim(lo, 1.0)
        ax.set_ylim(0.0, 1.01)
        ax.set_xlabel("False accept rate (FAR, log scale)")
        ax.set_ylabel("True accept rate (TAR = 1 - FRR)")
        ax.set_title(literal(title))
        ax.grid(True, which="major", alpha=0.4)
        ax.legend(loc="lower right")
        fig.tight_layout()
        out = save_figure(fig, path, dpi=dpi)
    finally:
        plt.close(fig)
    return out


def plot_score_histograms(
    genuine: Any,
    impostor: Any,
    threshold: float | None,
    path: str | os.PathLike,
    *,
    bins: int = 50,
    title: str = "Score distributions",
    dpi: int = 120,
) -> Path:
    """Write overlaid histograms of genuine and impostor scores to ``path`` (PNG).

    NaN scores (failures) cannot be placed on the axis; they are counted in the
    legend. Each histogram is normalised to a density so that sets of very
    different sizes stay comparable. ``threshold`` (if not None) is drawn as a
    vertical line. Returns the path.
    """
    plt = _pyplot()
    g = np.asarray(genuine, dtype=np.float64).ravel()
    i = np.asarray(impostor, dtype=np.float64).ravel()
    g_ok, i_ok = g[~np.isnan(g)], i[~np.isnan(i)]
    g_fail, i_fail = g.size - g_ok.size, i.size - i_ok.size
    both = np.concatenate([g_ok, i_ok])
    if both.size:
        lo, hi = float(both.min()), float(both.max())
        if threshold is not None and not math.isnan(float(threshold)):
            lo, hi = min(lo, float(threshold)), max(hi, float(threshold))
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, int(bins) + 1)
    else:
        edges = np.linspace(-1, 1, int(bins) + 1)

    def _lab(name: str, n: int, nf: int) -> str:
        return f"{name} (n={n}" + (f", {nf} failures" if nf else "") + ")"

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    try:
        if g_ok.size:
            ax.hist(g_ok, bins=edges, density=True, alpha=0.55, color="C2", label=_lab("genuine", g.size, g_fail))
        if i_ok.size:
            ax.hist(i_ok, bins=edges, density=True, alpha=0.55, color="C3", label=_lab("impostor", i.size, i_fail))
        if threshold is not None and not math.isnan(float(threshold)):
            ax.axvline(float(threshold), color="k", ls="--", lw=1.5, label=f"threshold = {float(threshold):.3f}")
        top = ax.get_ylim()[1]
        ax.set_ylim(0.0, top * 1.3)  # headroom so the legend does not cover the bars
        ax.set_xlabel("Similarity score (higher = more alike)")
        ax.set_ylabel("Density")
        ax.set_title(literal(title))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left")
        fig.tight_layout()
        out = save_figure(fig, path, dpi=dpi)
    finally:
        plt.close(fig)
    return out


def plot_det(
    fpir: Any,
    fnir: Any,
    path: str | os.PathLike,
    *,
    label: str | None = None,
    title: str = "DET (open-set identification)",
    fpir_targets: tuple[float, ...] = (1e-3, 1e-2, 1e-1),
    dpi: int = 120,
) -> Path:
    """Write the open-set DET curve (FNIR against FPIR, both on log axes) to ``path`` (PNG), with dotted
    lines at the FPIR targets; points with FPIR = 0 are drawn at the left edge. Returns the path."""
    plt = _pyplot()
    x = np.asarray(fpir, dtype=np.float64)
    y = np.asarray(fnir, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError("fpir and fnir must be 1-D arrays of equal length (>= 2 points)")
    pos = x[x > 0]
    lo = 10 ** math.floor(math.log10(min(1e-3, float(pos.min()) if pos.size else 1e-3)))
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(np.maximum(x, lo), np.maximum(y, 1e-4), label=None if label is None else literal(label))
    for t in fpir_targets:
        if t >= lo:
            ax.axvline(t, linestyle=":", color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_xlabel("FPIR (strangers named)")
    ax.set_ylabel("FNIR (enrolled people missed)")
    ax.set_title(literal(title))
    if label:
        ax.legend(loc="upper right")
    ax.grid(True, which="both", alpha=0.3)
    out = save_figure(fig, path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out
