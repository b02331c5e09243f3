"""Train the passive liveness model on attack data, split by subject, and report ISO/IEC 30107-3 figures.

    python -m siamface.liveness.train --nuaa ../shared/datasets/nuaa_train \\
        --replay ../shared/datasets/replay_crops --live ../shared/datasets/celeba_ids --live-every 3 \\
        [--out src/siamface/liveness/models/passive_v2.npz]

Data layouts understood (``--data`` may be given several times, as TYPE=DIR):
* NUAA: ``live/<subject>/*.jpg`` and ``photo/<subject>/*.jpg`` (640x480 frames; the face is detected);
* crops: ``real/*.png`` and ``fake/*.png`` (face crops; the face is detected in the crop, or the crop is
  the face); attack type "replay";
* more bona fide faces (``--live DIR``, ``DIR/<person>/*.jpg``): photos of real people from other cameras.
  NUAA and the crops show one webcam each; a model that saw only them learns "this webcam is live" and
  rejects real faces from any other camera. These folders get ``--live-share`` of the live class's weight.

Split: NUAA and ``--live`` folders by subject (the last third held out); crops have no subject labels, so they are
split by file number in blocks (frames of one recording are neighbours), the last 30 % held out. The
threshold is chosen on the training split (out of fold) at BPCER 5 %, then the held-out figures are
printed; the final model is refitted on everything (`--final`) or on the training split only (default).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np

from .metrics import LIVE, pad_report
from .passive import DEFAULT_MODEL, features, fit_logistic, hellinger

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def _number(path: Path) -> int:
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else 0


def collect(nuaa: Path | None, replay: Path | None, live: list[Path] = (), live_every: int = 1
            ) -> list[tuple[Path, str, str, bool]]:
    """(file, label, group, is_crop): label "live"/"photo"/"replay"; group decides the split."""
    items = []
    for root in live:
        files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)[::live_every]
        items += [(f, LIVE, f"live:{root.name}:{f.parent.name}", False) for f in files]
    if nuaa is not None:
        for kind, label in (("live", LIVE), ("photo", "photo")):
            for subject in sorted((nuaa / kind).iterdir()):
                for f in sorted(subject.iterdir()):
                    if f.suffix.lower() in IMAGE_SUFFIXES:
                        items.append((f, label, f"nuaa:{subject.name}", False))
    if replay is not None:
        for kind, label in (("real", LIVE), ("fake", "replay")):
            files = sorted((f for f in (replay / kind).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES),
                           key=_number)
            for rank, f in enumerate(files):
                block = int(10 * rank / len(files))               # ten blocks of neighbouring frames
                items.append((f, label, f"replay:{kind}:{block}", True))
    return items


def extract(items, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features of every item (None rows dropped), with a cache keyed by the file list."""
    from ..detection import create_detector
    from ..image import load_image

    if cache is not None:                     # one cache file per list of files
        digest = hashlib.sha256("\n".join(str(i[0]) for i in items).encode()).hexdigest()[:12]
        cache = cache.with_name(f"{cache.stem}-{digest}{cache.suffix}")
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if list(data["files"]) == [str(i[0]) for i in items]:
                return data["x"], data["ok"]
    detector = create_detector("retinaface", min_face_size=16)
    rows, ok = [], []
    for n, (path, _, _, is_crop) in enumerate(items):
        image = load_image(path)
        faces = detector.detect(image)
        if len(faces):
            box = faces.boxes[0]
        elif is_crop:
            h, w = image.shape[:2]
            box = np.array([w * 0.1, h * 0.1, w * 0.9, h * 0.9]) / 1.0
        else:
            rows.append(np.zeros(1))
            ok.append(False)
            continue
        rows.append(features(image, box))
        ok.append(True)
        if n % 200 == 0:
            print(f"  features {n}/{len(items)}", file=sys.stderr)
    width = max(len(r) for r in rows)
    x = np.stack([r if len(r) == width else np.zeros(width, np.float32) for r in rows]).astype(np.float32)
    ok = np.array(ok)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x, ok=ok, files=np.array([str(i[0]) for i in items]))
    return x, ok


def source_of(group: str) -> str:
    """The data source of an item's group: "nuaa", "replay" or "live:<folder>" (the group less its subject
    or block)."""
    return "replay" if group.startswith("replay:") else group.rsplit(":", 1)[0]


def split(items) -> np.ndarray:
    """True for held-out items: the last third of the subjects of NUAA and of each ``--live`` folder, the
    last 3 of 10 blocks of each crop kind."""
    held_subjects = set()
    for source in {source_of(g) for _, _, g, _ in items} - {"replay"}:
        subjects = sorted({g for _, _, g, _ in items if source_of(g) == source})
        held_subjects |= set(subjects[len(subjects) - len(subjects) // 3:])
    test = []
    for _, _, group, _ in items:
        if not group.startswith("replay:"):
            test.append(group in held_subjects)
        else:
            test.append(int(group.rsplit(":", 1)[1]) >= 7)
    return np.array(test)


def sample_weights(y: np.ndarray, groups: np.ndarray | None = None, live_share: float = 0.25) -> np.ndarray:
    """Live and attack classes weigh the same; within the live class the ``--live`` folders weigh
    ``live_share`` (when there are any), the attack datasets' own live faces the rest."""
    extra = np.zeros(len(y), bool) if groups is None else np.char.startswith(groups.astype(str), "live:")
    w = np.where(y == 1, 0.5, 0.5 / max((y == 0).sum(), 1))
    own = (y == 1) & ~extra
    if extra.any() and own.any():
        w[extra] *= live_share / extra.sum()
        w[own] *= (1 - live_share) / own.sum()
    else:
        w[y == 1] /= max((y == 1).sum(), 1)
    return w * len(y)


def fit(x: np.ndarray, y: np.ndarray, l2: float, weights: np.ndarray | None = None) -> dict:
    x = hellinger(x)
    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    if weights is None:                                       # balance live and attack presentations
        weights = sample_weights(y)
    weights, bias = fit_logistic((x - mean) / scale, y, l2=l2, weights=weights)
    return {"mean": mean, "scale": scale, "weights": weights, "bias": bias}


def probability(model: dict, x: np.ndarray) -> np.ndarray:
    z = ((hellinger(x) - model["mean"]) / model["scale"]) @ model["weights"] + model["bias"]
    return 1 / (1 + np.exp(-np.clip(z, -30, 30)))


def fold_of(group: str, index: int, folds: int) -> int:
    """Cross-validation fold of a group: NUAA subjects in turn; crop blocks two by two, so that a fold
    holds a contiguous stretch of recording that its neighbours do not see (frames next to each other are
    near-copies: mixing them would make validation a memory test)."""
    if group.startswith("replay:"):
        return (int(group.rsplit(":", 1)[1]) // 2) % folds
    return index % folds


def out_of_fold(x, y, groups, l2: float, folds: int = 4, weights: np.ndarray | None = None) -> np.ndarray:
    """Scores of each training item from a model that did not see its fold."""
    unique = sorted(set(groups))
    fold_map = {g: fold_of(g, i, folds) for i, g in enumerate(unique)}
    fold = np.array([fold_map[g] for g in groups])
    scores = np.zeros(len(y))
    for k in range(folds):
        held = fold == k
        if held.any() and (~held).any():
            w = None if weights is None else weights[~held]
            scores[held] = probability(fit(x[~held], y[~held], l2, w), x[held])
    return scores


def threshold_at_bpcer(scores: np.ndarray, live: np.ndarray, bpcer: float = 0.05) -> float:
    return float(np.quantile(scores[live], bpcer))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nuaa", type=Path)
    ap.add_argument("--replay", type=Path)
    ap.add_argument("--live", type=Path, action="append", default=[], metavar="DIR",
                    help="more bona fide faces, DIR/<person>/*.jpg (repeatable)")
    ap.add_argument("--live-every", type=int, default=1, metavar="N", help="use every N-th file of --live folders")
    ap.add_argument("--live-share", type=float, default=0.25,
                    help="share of the live class's weight given to the --live folders (0.25)")
    ap.add_argument("--bpcer", type=float, default=0.05,
                    help="threshold: at most this out-of-fold BPCER on every live source of the training split")
    ap.add_argument("--name", default="passive_v2", help="model name in the file's metadata")
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--cache", type=Path, default=Path(".cache/liveness/features.npz"))
    ap.add_argument("--l2", type=float, nargs="+", default=[30.0, 100.0, 300.0, 1000.0, 3000.0],
                    help="L2 strengths tried; the one with the lowest out-of-fold EER on the training split wins")
    ap.add_argument("--final", action="store_true", help="refit on every item (train + held out) at the end")
    args = ap.parse_args(argv)
    if args.nuaa is None and args.replay is None:
        ap.error("give --nuaa and/or --replay")

    items = collect(args.nuaa, args.replay, args.live, args.live_every)
    x, ok = extract(items, args.cache)
    labels = np.array([i[1] for i in items])
    groups = np.array([i[2] for i in items])
    sources = np.array([source_of(g) for g in groups])
    test = split(items)
    y = (labels == LIVE).astype(np.float64)
    print(f"items {len(items)}, no face {int((~ok).sum())}, held out {int((test & ok).sum())}")
    train = ok & ~test
    w_train = sample_weights(y[train], groups[train], args.live_share)
    best = None
    for l2 in args.l2:                       # model selection on the training split only
        oof = out_of_fold(x[train], y[train], groups[train], l2, weights=w_train)
        eer = pad_report(oof, labels[train], 0.5).eer
        print(f"l2 {l2:g}: out-of-fold EER {eer:.4f}")
        if best is None or eer < best[0]:
            best = (eer, l2, oof)
    _, l2, oof = best
    live_sources = sorted(set(sources[train & (y == 1)]))
    thr = min(threshold_at_bpcer(oof, (y[train] == 1) & (sources[train] == src), args.bpcer) for src in live_sources)
    print(f"l2 {l2:g}; threshold (out-of-fold BPCER <= {args.bpcer:g} on each live source of the training "
          f"split: {', '.join(live_sources)}) {thr:.4f}")
    model = fit(x[train], y[train], l2, w_train)
    held = ok & test
    p_held = probability(model, x[held])
    report = pad_report(p_held, labels[held], thr)
    print("held-out:", json.dumps(report.to_dict()))
    per_source = {src: round(float(np.mean(p_held[(sources[held] == src) & (y[held] == 1)] < thr)), 4)
                  for src in sorted(set(sources[held & (y == 1)]))}
    print("held-out BPCER per live source:", json.dumps(per_source))
    if args.final:
        model = fit(x[ok], y[ok], l2, sample_weights(y[ok], groups[ok], args.live_share))
    meta = {"name": args.name, "features": "colour LBP + spectrum, 64x64 face x1.2, Hellinger map",
            "threshold": thr, "l2": l2, "live_share": args.live_share, "bpcer_target": args.bpcer,
            "trained_on": {"nuaa": str(args.nuaa) if args.nuaa else None,
                           "replay": str(args.replay) if args.replay else None,
                           "live": [f"{d} (every {args.live_every})" for d in args.live],
                           "split": "final refit on all" if args.final else "training split only"},
            "held_out": {**report.to_dict(), "bpcer_per_live_source": per_source}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, mean=model["mean"].astype(np.float32), scale=model["scale"].astype(np.float32),
                        weights=model["weights"].astype(np.float32), bias=np.float32(model["bias"]),
                        meta=np.array(json.dumps(meta)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
