"""`siamface evaluate --liveness DIR`: presentation-attack figures (ISO/IEC 30107-3) on a folder of images.

Layout: ``DIR/live/**`` (or ``real/``, ``bona_fide/``) holds bona fide images; every other sub-folder is
an attack type named after it (``photo/``, ``replay/``, ``mask/`` ...), images at any depth. The largest
face of each image is scored by the passive model; images with no face are counted apart. Writes
report.json and a score histogram (scores.png, with matplotlib) into --out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .metrics import LIVE, PadReport, pad_report
from .passive import PassiveLiveness

LIVE_NAMES = {"live", "real", "bona_fide", "bonafide", "genuine"}
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff"}


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


def score_items(items, pipeline, model: PassiveLiveness, progress=None) -> tuple[np.ndarray, list[str], list[str]]:
    from ..image import load_image

    scores, labels, missed = [], [], []
    for n, (path, label) in enumerate(items):
        image = load_image(path)
        faces = pipeline.detect(image)
        if progress:
            progress(n + 1, len(items))
        if not len(faces):
            missed.append(str(path))
            continue
        scores.append(model.score(image, faces.boxes[0]).score)
        labels.append(label)
    return np.array(scores), labels, missed


def run(args, pipeline) -> int:
    root = Path(args.liveness)
    items = collect(root)
    model = PassiveLiveness(threshold=args.threshold)
    out = Path(args.out or f"out/evaluate-liveness-{root.resolve().name}")
    out.mkdir(parents=True, exist_ok=True)

    def progress(done, total):
        if not args.quiet and sys.stderr.isatty():
            print(f"\r  scoring {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    scores, labels, missed = score_items(items, pipeline, model, progress)
    report = pad_report(scores, labels, model.threshold)
    payload = {"dataset": str(root), "model": model.name, "trained_on": model.meta.get("trained_on"),
               "no_face": len(missed), "no_face_files": missed[:50], **report.to_dict()}
    (out / "report.json").write_text(json.dumps(payload, indent=2))
    written = [out / "report.json"]
    if _histogram(scores, labels, report, out / "scores.png", root.name):
        written.append(out / "scores.png")
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(_text(root, model, report, missed))
        print("wrote " + ", ".join(map(str, written)))
    return 0


def _text(root: Path, model: PassiveLiveness, r: PadReport, missed: list[str]) -> str:
    lines = [f"presentation-attack detection on {root}", f"  model {model.name} (threshold {r.threshold:.4f})",
             "  presentations " + ", ".join(f"{k} {v}" for k, v in r.counts.items())
             + f"; {len(missed)} with no face (not scored)",
             f"  BPCER  {100 * r.bpcer:6.2f}%   (live refused)"]
    for kind, rate in r.apcer.items():
        lines.append(f"  APCER  {100 * rate:6.2f}%   ({kind} accepted as live)")
    lines += [f"  ACER   {100 * r.acer:6.2f}%",
              f"  EER    {100 * r.eer:6.2f}% at threshold {r.eer_threshold:.4f}",
              "  BPCER at APCER 5% / 1%: " + " / ".join(f"{100 * v:.2f}%" for v in r.bpcer_at_apcer.values())]
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
        ax.hist(scores[labels == kind], bins=bins, alpha=0.55, density=True,
                label=f"{kind} (n={int((labels == kind).sum())})")
    ax.axvline(report.threshold, color="k", ls="--", label=f"threshold {report.threshold:.3f}")
    ax.set_xlabel("liveness score (probability of live)")
    ax.set_ylabel("density")
    ax.set_title(f"Liveness scores: {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
