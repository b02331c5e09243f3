"""Liveness figures on data the default never saw: the default passive check (passive_v5: the pretrained
MiniFASNet pair and the colour cue, no weights of our own), the pretrained pair alone, and beside them, when
given (``--finetuned DIR``), the previous default passive_v4 and its fine-tuned pair alone, which the package
no longer carries (trained on data whose terms forbid shipping it; a user with such files points at them).

    python benchmarks/liveness.py [--data ../shared/datasets] [--cache .cache/liveness] [--finetuned DIR]

DIR holds passive_v4.json, its minifasnet_v2.onnx / minifasnet_v1se.onnx and passive_v2.npz, as
``tools/finetune_minifasnet.py --anchor 1.0`` writes them (or as git history holds them:
``git show 098aa45:src/siamface/liveness/models/passive_v4/passive_v4.json`` and so on).

Decisions compared (each face: its largest-face box from RetinaFace):
* ``cnn``: the pretrained pair alone, mean probability of real >= ``CNN_THRESHOLD``;
* ``combined``: the default passive check (`PassiveCheck()`): the pair and the colour cue (colour camera);
* ``cnn_v4``: passive_v4's fine-tuned pair alone, at its threshold from the training split;
* ``passive_v4``: the previous default (the fine-tuned pair, the texture model and the frame cue combined).

1. Per frame, held out by `siamface.liveness.train.split` (NUAA subjects 0007-0009, live and printed photo;
   the last 3 of 10 blocks of the replay crops; the last third of the celeba_ids people, every 3rd photo).
2. Per frame, bona fide faces from cameras no training data came from: the videos_hamilton clip (every 2nd
   frame, every face >= 40 px) and the deepface_pairs photos; and the replay_videos frames (live and phone
   replay, full frames).
3. The frame cue's firing rate (straight edges on 3-4 sides) on every bona fide source (evidence only now).
4. Per presentation, decided as a passive capture session does (`liveness.session`: at least 10 faces, at
   least 80 % of them live): each NUAA held-out recording, 1-second windows of the replay_videos and of the
   Hamilton clip (largest face).
5. The active check against every attack recording (every challenge order, no time limit), and
   ``--liveness both`` (an attack must pass the passive session and the challenge).
6. Speed: ms per face for the whole passive check.

Every face's cues are computed once and cached under --cache (`train.cue_table` for the training sets).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ORDERS = [
    list(o)
    for o in itertools.permutations(("turn_left", "turn_right", "closer"), 2)
    if "closer" not in o or any(c.startswith("turn") for c in o)
]
DECISIONS = ["cnn", "combined"]
LIVE_SHARE, MIN_FACES = 0.8, 10  # a passive capture session's rule (`liveness.session.CaptureRules`)
TARGETS = {"apcer.photo": 0.01, "apcer.replay": 0.05, "bpcer.nuaa": 0.02, "bpcer.other": 0.05, "ms": 10.0}


def face_table(cache: Path, images, all_faces: bool, min_size: int = 40) -> dict[str, np.ndarray]:
    """Cues of the faces of a stream of images (every face >= min_size px, or the largest), cached."""
    if cache.is_file():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    from siamface import Pipeline
    from siamface.liveness.cnn import AntiSpoofCnn
    from siamface.liveness.colour import colour_spread, to_grey
    from siamface.liveness.passive import SIDES, features, frame_sides

    pipeline, cnn = Pipeline(), AntiSpoofCnn()
    rows = defaultdict(list)
    for f, image in enumerate(images):
        faces = pipeline.detect(image)
        if not len(faces):
            continue
        largest = int(np.argmax(faces.areas))
        for j in range(len(faces)) if all_faces else [largest]:
            box = faces.boxes[j]
            if all_faces and box[2] - box[0] < min_size:
                continue
            found = frame_sides(image, box)
            for key, value in (
                ("frame", f),
                ("largest", j == largest),
                ("box", box),
                ("kps", faces.data["keypoints"][j]),
                ("x", features(image, box)),
                ("cnn", cnn.probabilities(image, [box])[0]),
                ("colour", colour_spread(image, box)),
                ("cnn_grey", cnn.probabilities(to_grey(image), [box])[0]),
                ("sides", [s in found for s in SIDES]),
            ):
                rows[key].append(value)
    table = {k: np.array(v) for k, v in rows.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **table)
    return table


def networks_tag(model_dir: Path) -> str:
    """A short hash of a CNN pair's two graphs: the cache key of its scores."""
    from siamface.liveness.cnn import NETWORKS

    return hashlib.sha256(b"".join((model_dir / f"{n}.onnx").read_bytes() for n in NETWORKS)).hexdigest()[:12]


class Decide:
    """The decisions' live/not-live for rows of cues (cnn: the pretrained pair; colour; cnn_default: the
    fine-tuned pair of passive_v4, when given; x: texture features; sides)."""

    def __init__(self, finetuned: Path | None = None) -> None:
        from siamface.liveness import PassiveCheck

        self.check = PassiveCheck()
        self.networks = {}
        self.previous = None
        if finetuned is not None:
            self.previous = PassiveCheck(finetuned / "passive_v4.json")
            self.networks["cnn_default"] = (self.previous.cnn, networks_tag(finetuned))

    def __call__(self, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from siamface.liveness.combined import CNN_THRESHOLD, default_live

        out = {
            "cnn": t["cnn"].mean(axis=1) >= CNN_THRESHOLD,
            "combined": default_live(t["cnn"], t["colour"]),
        }
        if self.previous is not None:
            p, own = self.previous, t["cnn_default"]
            out["cnn_v4"] = own.mean(axis=1) >= float(p.meta["cnn_alone_threshold"])
            out["passive_v4"] = p.combine(p.texture.probability(t["x"]), own, t["sides"]) >= p.threshold
        return out


def rescore(cache: Path, table: dict[str, np.ndarray], images, cnn) -> np.ndarray:
    """A candidate CNN pair's probabilities of real for every cached face (row ``i`` of image ``frame[i]``
    of the stream ``images``, None for images with no row), cached."""
    if cache.is_file():
        return np.load(cache)
    out = np.zeros((len(table["box"]), 2))
    rows = defaultdict(list)
    for i, f in enumerate(table["frame"]):
        rows[int(f)].append(i)
    for f, image in enumerate(images):
        if image is not None and rows.get(f):
            out[rows[f]] = cnn.probabilities(image, table["box"][rows[f]])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, out)
    return out


def rate(values) -> str:
    values = np.asarray(list(values), bool)
    return f"{values.mean():.4f} ({int(values.sum())}/{len(values)})" if len(values) else "n/a"


def side_by_side(name: str, live: dict[str, np.ndarray], attack: bool) -> dict[str, float]:
    """One line per decision: BPCER (share of live refused) or APCER (share of attacks accepted)."""
    out = {}
    for d in DECISIONS:
        shown = live[d] if attack else ~live[d]
        out[d] = float(np.mean(shown)) if len(shown) else float("nan")
        print(f"{name}.{'apcer' if attack else 'bpcer'}.{d} {rate(shown)}")
    return out


def session(frames_live: list[bool | None]) -> bool:
    """A passive capture session's rule over one presentation: at least MIN_FACES faces, LIVE_SHARE of them
    live (the timing checks hold for a recording at camera rate)."""
    faces = [ok for ok in frames_live if ok is not None]
    return len(faces) >= MIN_FACES and sum(faces) >= LIVE_SHARE * len(faces)


def active_passes(keypoints_boxes, fps: float = 5.0) -> list[bool]:
    """For every challenge order: does this recording pass the active check (no time limit)?"""
    from siamface.liveness.active import ActiveCheck

    out = []
    for order in ORDERS:
        check = ActiveCheck(challenges=order, timeout=1e9)
        result = None
        for i, (k, box) in enumerate(keypoints_boxes):
            result = check.update(k, box, i / fps)
            if result is not None:
                break
        out.append(bool(result and result.passed))
    return out


def verdict(name: str, value: float, target: float, unit: str = "") -> bool:
    ok = value <= target
    met = "met" if ok else "NOT met"
    shown = f"{value:.2f} ms" if unit == "ms" else f"{100 * value:.2f} %"
    limit = f"{target:g} ms" if unit == "ms" else f"{100 * target:g} %"
    print(f"target {name}: {shown} (target <= {limit}) {met}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "liveness")
    ap.add_argument(
        "--finetuned",
        type=Path,
        metavar="DIR",
        help="passive_v4's files (passive_v4.json, its two networks, passive_v2.npz) to compare with the default",
    )
    args = ap.parse_args()

    from siamface.image import load_image
    from siamface.liveness import train as T
    from siamface.liveness.combined import CNN_THRESHOLD, COLOUR_MIN
    from siamface.liveness.evaluate import video_frames

    decide = Decide(args.finetuned)
    if decide.previous is not None:
        DECISIONS.extend(["cnn_v4", "passive_v4"])
        p = decide.previous
        print(
            f"passive_v4 threshold {p.threshold:.4f}; its fine-tuned pair alone {float(p.meta['cnn_alone_threshold']):.4f}"
        )
    print(f"default {decide.check.name}: pretrained pair >= {CNN_THRESHOLD} and colour spread >= {COLOUR_MIN}")

    # 1. held-out frames ------------------------------------------------------------------------------
    live_dirs = [args.data / "celeba_ids"] if (args.data / "celeba_ids").is_dir() else []
    items = T.collect(args.data / "nuaa_train", args.data / "replay_crops", live_dirs, live_every=3)
    held = T.split(items)
    table = T.cue_table(items, args.cache / "cues.npz")
    ok = table["ok"]
    table["frame"] = np.arange(len(items))
    for column, (cnn, tag) in decide.networks.items():
        images = (load_image(item[0]) if ok[n] else None for n, item in enumerate(items))
        table[column] = rescore(args.cache / f"cnn-{tag}-cues.npy", table, images, cnn)
    labels = np.array([i[1] for i in items])
    sources = np.array([T.source_of(i[2]) for i in items])
    decided = decide(table)
    use = held & ok
    print(f"heldout.counts {dict(zip(*np.unique(labels[use], return_counts=True)))}; no face {int((held & ~ok).sum())}")
    figures = defaultdict(dict)
    for kind in ("photo", "replay"):
        m = use & (labels == kind)
        figures[f"apcer.{kind}"] = side_by_side(f"frame.heldout.{kind}", {d: v[m] for d, v in decided.items()}, True)
    for src in sorted(set(sources[use & (labels == "live")])):
        m = use & (labels == "live") & (sources == src)
        figures[f"bpcer.{src}"] = side_by_side(
            f"frame.heldout.{src.replace('live:', '')}.live", {d: v[m] for d, v in decided.items()}, False
        )

    # 2. bona fide faces from other cameras; the replay videos' frames --------------------------------
    clip = args.data / "videos_hamilton" / "short_hamilton_clip.mp4"
    photos = sorted((args.data / "deepface_pairs" / "dataset").glob("*.jpg"))
    real = args.data / "replay_videos" / "apfol_real2.webm"
    fake = args.data / "replay_videos" / "apfol_fake2_replay.webm"
    streams = {
        "hamilton": (lambda: video_frames(clip, 10_000), True, "hamilton"),
        "deepface": (lambda: (load_image(p) for p in photos), True, "deepface"),
        "replay_video_live": (lambda: video_frames(real, 10_000), False, "replay_live"),
        "replay_video_attack": (lambda: video_frames(fake, 10_000), False, "replay_attack"),
    }
    tables = {}
    for name, (images, all_faces, file) in streams.items():
        tables[name] = face_table(args.cache / f"faces-{file}.npz", images(), all_faces)
        for column, (cnn, tag) in decide.networks.items():
            tables[name][column] = rescore(args.cache / f"cnn-{tag}-{file}.npy", tables[name], images(), cnn)
    for name, t in tables.items():
        d = decide(t)
        keep = (t["frame"] % 2 == 0) if name == "hamilton" else np.ones(len(t["frame"]), bool)
        key = "apcer.replay_video" if name.endswith("attack") else f"bpcer.{name}"
        figures[key] = side_by_side(f"frame.{name}", {k: v[keep] for k, v in d.items()}, name.endswith("attack"))

    # 3. the frame cue on every bona fide source -------------------------------------------------------
    for src in sorted(set(sources[ok & (labels == "live")])):
        m = ok & (labels == "live") & (sources == src)
        print(
            f"frame_cue.fires.{src.replace('live:', '')}.live {rate(table['sides'][m].sum(1) >= 3)} (train + held out)"
        )
    for name, t in tables.items():
        print(f"frame_cue.fires.{name} {rate(t['sides'].sum(1) >= 3)}")
    m = ok & (labels == "photo")
    print(f"frame_cue.fires.nuaa.photo {rate(table['sides'][m].sum(1) >= 3)} (for comparison: attacks)")

    # 4 + 5. presentations -----------------------------------------------------------------------------
    presentations = []  # (source, label, {decision: [live or None per frame]}, [(keypoints, box)])
    recordings: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i in np.flatnonzero(held):
        path, label, group, _ = items[i]
        if group.startswith("nuaa:"):
            recordings[(label, path.stem.rsplit("_", 1)[0])].append(i)
    for (label, _), idx in sorted(recordings.items()):
        idx = sorted(idx, key=lambda i: int(re.findall(r"\d+", items[i][0].stem)[-1]))
        frames = {d: [bool(decided[d][i]) if ok[i] else None for i in idx] for d in DECISIONS}
        presentations.append(
            ("nuaa", label, frames, [(table["kps"][i], table["box"][i]) if ok[i] else (None, None) for i in idx])
        )
    for name, label in (("replay_video_live", "live"), ("replay_video_attack", "replay"), ("hamilton", "live")):
        t = tables[name]
        d = decide(t)
        largest = t["largest"].astype(bool)
        by_frame = {int(f): i for i, f in enumerate(t["frame"]) if largest[i]}
        count = int(t["frame"].max()) + 1
        for start in range(0, count - 29, 30):  # 1-second windows at 30 fps
            window = [by_frame.get(f) for f in range(start, start + 30)]
            frames = {k: [None if i is None else bool(v[i]) for i in window] for k, v in d.items()}
            kb = [(None, None) if i is None else (t["kps"][i], t["box"][i]) for i in window]
            presentations.append(("hamilton" if name == "hamilton" else "replay_video", label, frames, kb))
    granted = defaultdict(list)
    active, both = defaultdict(list), defaultdict(list)
    for source, label, frames, kb in presentations:
        for d in DECISIONS:
            granted[(source, label, d)].append(session(frames[d]))
        if label != "live":
            passes = active_passes(kb)
            active[(source, label)] += passes
            both[(source, label)] += [session(frames["combined"]) and p for p in passes]
    errors = {}
    for (source, label, d), values in sorted(granted.items()):
        wrong = [not v for v in values] if label == "live" else values
        errors[(source, label, d)] = int(np.sum(wrong))
        what = "bpcer" if label == "live" else f"apcer.{label}"
        print(f"presentation.{source}.{what}.{d} {rate(wrong)}")
    for (source, label), values in sorted(active.items()):
        print(f"presentation.{source}.active.apcer.{label} {rate(values)} (every challenge order x recording)")
    for (source, label), values in sorted(both.items()):
        print(f"presentation.{source}.both.apcer.{label} {rate(values)} (passive check and challenge)")

    # 6. speed ----------------------------------------------------------------------------------------
    from siamface import Pipeline

    pipeline = Pipeline()
    checks = {"combined": decide.check}
    if decide.previous is not None:
        checks["passive_v4"] = decide.previous
    speed = {}
    for label, check in checks.items():
        speed[label] = time_check(
            pipeline, check, [items[i][0] for i in np.flatnonzero(use & (sources == "nuaa"))][::10]
        )
        print(
            f"passive.ms_per_face.{label} wall {speed[label][0]:.2f}, CPU time {speed[label][1]:.2f}, fastest wall "
            f"{speed[label][2]:.2f} (median of {speed[label][3]} runs on NUAA frames, 640x480: texture + frame + CNN "
            f"pair + combiner; one ONNX Runtime thread; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
            "cores: wall time includes waiting for the CPU)"
        )

    # targets --------------------------------------------------------------------------------------------
    met = {}
    for label in checks:
        print(f"targets of the {label} decision ({checks[label].name}):")
        met[label] = targets(figures, errors, granted, label, speed[label])


def time_check(pipeline, check, sample) -> tuple[float, float, float, int]:
    """(median wall ms, median CPU ms, fastest wall ms, runs) of the whole passive check per face."""
    from siamface.image import load_image

    timings, cpu = [], []
    for path in sample:
        image = load_image(path)
        faces = pipeline.detect(image)
        if len(faces):
            box = faces.boxes[int(np.argmax(faces.areas))]
            check.score(image, box)  # warm
            for _ in range(5):
                t0, c0 = time.perf_counter(), time.process_time()
                check.score(image, box)
                timings.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(timings), statistics.median(cpu), min(timings), len(timings)


def targets(figures, errors, granted, d: str, speed) -> dict[str, bool]:
    """Print the issue's targets for decision ``d``; returns {target: met}."""
    met = {}
    c = {k: v[d] for k, v in figures.items()}
    met["apcer.photo"] = verdict(
        "per frame APCER printed photo (NUAA held out)", c["apcer.photo"], TARGETS["apcer.photo"]
    )
    met["apcer.replay"] = verdict(
        "per frame APCER replay (replay crops held out)", c["apcer.replay"], TARGETS["apcer.replay"]
    )
    met["apcer.replay_video"] = verdict(
        "per frame APCER replay (replay_videos frames)", c["apcer.replay_video"], TARGETS["apcer.replay"]
    )
    met["bpcer.nuaa"] = verdict("per frame BPCER NUAA live (held out)", c["bpcer.nuaa"], TARGETS["bpcer.nuaa"])
    for key in sorted(k for k in c if k.startswith("bpcer.") and k != "bpcer.nuaa"):
        met[key] = verdict(f"per frame BPCER {key[6:]}", c[key], TARGETS["bpcer.other"])
    wrong = sum(v for (s, l, dd), v in errors.items() if dd == d)
    total = sum(len(v) for (s, l, dd), v in granted.items() if dd == d)
    print(
        f"target per presentation no error on the held-out recordings: {wrong} errors of {total} "
        f"{'met' if wrong == 0 else 'NOT met'}"
    )
    met["presentation"] = wrong == 0
    met["ms"] = verdict("whole passive check per face, CPU time", speed[1], TARGETS["ms"], "ms")
    verdict("whole passive check per face, wall time", speed[0], TARGETS["ms"], "ms")
    return met


if __name__ == "__main__":
    main()
