"""Presentation-attack figures (``siamface evaluate --liveness DIR``) (ISO/IEC 30107-3) on a folder of images.

Layout: ``DIR/live/**`` (or ``real/``, ``bona_fide/``) holds bona fide images or videos; every other
sub-folder is an attack type named after it (``photo/``, ``replay/``, ``mask/`` ...), files at any depth.
Each file is one presentation. An image: the largest face is scored by the passive check (`PassiveCheck`:
the pretrained CNN pair and the colour cue by default, or a user's combiner file). A video (a recording of one attempt): up to
`VIDEO_FRAMES` frames spread over it are scored and the presentation's score is their median, as a camera
session would see it; the per-frame figures are reported too. Every cue is also reported alone, each at its
own threshold: the CNN pair (mean probability of real, at the default's threshold), the colour cue (the
spread of the face's saturation) and the frame cue (a face framed on 3-4 sides is an attack). Files
with no face are counted apart. Writes report.json and a histogram of the combined score (scores.png, with
matplotlib) into --out.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import IMAGE_SUFFIXES, VIDEO_SUFFIXES, atomic_write_bytes
from ..errors import ConfigError
from .combined import PassiveCheck, PassiveScore
from .metrics import LIVE, PadReport, pad_report

LIVE_NAMES = {"live", "real", "bona_fide", "bonafide", "genuine"}
SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
VIDEO_FRAMES = 30
#: the decisions reported: the combination, then every cue alone
DECISIONS = ("combined", "cnn", "colour", "frame")


def collect(root: Path) -> list[tuple[Path, str]]:
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder")
    items = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        label = LIVE if sub.name.lower() in LIVE_NAMES else sub.name
        items += [(f, label) for f in sorted(sub.rglob("*")) if f.suffix.lower() in SUFFIXES]
    labels = {label for _, label in items}
    if LIVE not in labels or len(labels) < 2:
        raise ConfigError(f"{root}: needs a live/ (or real/) folder and at least one attack folder")
    return items


def video_frames(path: Path, count: int = VIDEO_FRAMES):
    """Up to ``count`` RGB frames spread evenly over a video file (`siamface.video.open_source`)."""
    from ..video import open_source

    with open_source(path) as source:
        step = max(1, source.frame_count // count) if source.frame_count else 1
        for frame in itertools.islice(source, 0, step * count, step):
            yield frame.image


def cue_values(s: PassiveScore) -> dict[str, float]:
    """Each decision's score for one face: the combination and every cue alone."""
    colour = s.colour if s.colour is not None else 1.0  # a grey camera has no colour to read
    return {"combined": s.decision_score, "cnn": s.cnn.score, "colour": colour, "frame": 0.0 if s.framed else 1.0}


def cue_thresholds(model: PassiveCheck) -> dict[str, float]:
    from .combined import CNN_THRESHOLD, COLOUR_MIN

    return {"combined": model.threshold, "cnn": CNN_THRESHOLD, "colour": COLOUR_MIN, "frame": 0.5}


def score_items(items, pipeline, model: PassiveCheck, progress=None):
    """(presentation scores, labels, files with no face, per-frame scores, per-frame labels); scores are
    dicts of arrays, one per decision of `cue_values`."""
    from ..image import load_image

    scores, labels, missed, frame_scores, frame_labels = [], [], [], [], []
    for n, (path, label) in enumerate(items):
        images = video_frames(path) if path.suffix.lower() in VIDEO_SUFFIXES else [load_image(path)]
        seen = []
        for image in images:
            faces = pipeline.detect(image)
            if len(faces):
                seen.append(cue_values(model.score(image, faces.boxes[int(np.argmax(faces.areas))])))
        if progress:
            progress(n + 1, len(items))
        if not seen:
            missed.append(str(path))
            continue
        scores.append({k: float(np.median([s[k] for s in seen])) for k in seen[0]})
        labels.append(label)
        frame_scores += seen
        frame_labels += [label] * len(seen)

    def columns(rows):
        return {k: np.array([r[k] for r in rows]) for k in DECISIONS}

    return columns(scores), labels, missed, columns(frame_scores), frame_labels


@dataclass(frozen=True)
class LivenessEvaluation:
    """What `evaluate_liveness` measured and wrote: ``payload`` is report.json's content."""

    root: Path
    model: PassiveCheck
    report: PadReport
    payload: dict
    missed: list[str]
    videos: int
    written: list[Path]


def evaluate_liveness(
    root: Path, pipeline, out: Path, threshold: float | None = None, progress: Callable[[int, int], None] | None = None
) -> LivenessEvaluation:
    """Score every presentation under `root` with the passive check (at `threshold`, None: its own), write
    report.json and scores.png (with matplotlib) into `out`; `progress(done, total)` after each file."""
    items = collect(root)
    model = PassiveCheck(threshold=threshold)
    out.mkdir(parents=True, exist_ok=True)
    scores, labels, missed, frame_scores, frame_labels = score_items(items, pipeline, model, progress)
    if not labels:
        raise ConfigError(f"{root}: no face found in any file")
    thresholds = cue_thresholds(model)
    report = pad_report(scores["combined"], labels, model.threshold)
    payload = {
        "dataset": str(root),
        "model": model.name,
        "trained_on": model.meta.get("trained_on"),
        "no_face": len(missed),
        "no_face_files": missed[:50],
        **report.to_dict(),
    }
    payload["cues"] = {k: pad_report(scores[k], labels, thresholds[k]).to_dict() for k in DECISIONS[1:]}
    videos = sum(p.suffix.lower() in VIDEO_SUFFIXES for p, _ in items)
    if videos:
        payload["videos"] = videos
        payload["per_frame"] = {
            k: pad_report(frame_scores[k], frame_labels, thresholds[k]).to_dict() for k in DECISIONS
        }
    # whole under a random name, renamed into place (as evaluate's other outputs): never through a link
    # planted at its name in a shared output folder, which write_text followed and overwrote the target of
    atomic_write_bytes(out / "report.json", json.dumps(payload, indent=2).encode())
    written = [out / "report.json"]
    if _histogram(scores["combined"], labels, report, out / "scores.png", root.name):
        written.append(out / "scores.png")
    return LivenessEvaluation(root, model, report, payload, missed, videos, written)


def format_evaluation(result: LivenessEvaluation) -> str:
    """The text report: the passive check's figures, then every decision per presentation (and per frame)."""
    payload, report, videos = result.payload, result.report, result.videos
    lines = [
        _text(result.root, result.model, report, result.missed),
        "  every decision, per presentation"
        + (" (a video: the median of its frames)" if videos else "")
        + " / per frame:",
    ]
    for k in DECISIONS:
        rows = [("presentation", report.to_dict() if k == "combined" else payload["cues"][k])]
        if videos:
            rows.append(("frame", payload["per_frame"][k]))
        for unit, r in rows:
            lines.append(
                f"    {k:9s} {unit:12s} threshold {r['threshold']:.4f}  BPCER {100 * r['bpcer']:6.2f}%  "
                + "  ".join(f"APCER {t} {100 * v:6.2f}%" for t, v in r["apcer"].items())
            )
    lines.append("wrote " + ", ".join(map(str, result.written)))
    return "\n".join(lines)


def _text(root: Path, model: PassiveCheck, r: PadReport, missed: list[str]) -> str:
    lines = [
        f"presentation-attack detection on {root}",
        f"  passive check {model.name} (threshold {r.threshold:.4f})",
        "  presentations "
        + ", ".join(f"{k} {v}" for k, v in r.counts.items())
        + f"; {len(missed)} with no face (not scored)",
        f"  BPCER  {100 * r.bpcer:6.2f}%   (live refused)",
    ]
    for kind, rate in r.apcer.items():
        lines.append(f"  APCER  {100 * rate:6.2f}%   ({kind} accepted as live)")
    lines += [
        f"  ACER   {100 * r.acer:6.2f}%",
        f"  EER    {100 * r.eer:6.2f}% at threshold {r.eer_threshold:.4f}",
        "  BPCER at APCER 5% / 1%: " + " / ".join(f"{100 * v:.2f}%" for v in r.bpcer_at_apcer.values()),
    ]
    return "\n".join(lines)


def _histogram(scores, labels, report: PadReport, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = np.array(labels)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bins = np.linspace(0, 1, 41)
    for kind in [LIVE, *report.apcer]:
        ax.hist(
            scores[labels == kind],
            bins=bins,
            alpha=0.55,
            density=True,
            label=_literal(f"{kind} (n={int((labels == kind).sum())})"),
        )
    ax.axvline(report.threshold, color="k", ls="--", label=f"threshold {report.threshold:.3f}")
    ax.set_xlabel("liveness score (probability of live)")
    ax.set_ylabel("density")
    ax.set_title(_literal(f"Liveness scores: {title}"))
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())  # never through a link planted at its name
    return True


def _literal(text: str) -> str:
    """Folder names as written: a ``$`` would start matplotlib's mathtext, and a name it cannot parse failed
    the figure (`siamface.evaluation.plots.literal`)."""
    return text.replace("$", r"\$")
