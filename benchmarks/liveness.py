"""Liveness figures on data the shipped passive model never saw, one figure per line.

    python benchmarks/liveness.py [--data ../shared/datasets]

1. The held-out split of `siamface.liveness.train` (NUAA subjects 0007-0009 with their printed photos;
   the last 3 of 10 blocks of the replay crops): BPCER, APCER per attack type, ACER at the shipped threshold.
2. replay_videos (a live person, and a phone replaying a scene to the webcam): per-frame BPCER/APCER, and
   the decision `authenticate` would take with its default of 3 consecutive frames (the share of 3-frame
   windows that pass). NOT independent: the replay crops (training data) look cut from these very
   recordings (214 live crops, 214 live frames), so these figures only show the per-video behaviour.
3. Speed: ms per face for the passive features + model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    args = ap.parse_args()

    from siamface import Pipeline
    from siamface.liveness import PassiveLiveness, pad_report
    from siamface.liveness import train as T
    from siamface.video import open_source

    model = PassiveLiveness()
    pipeline = Pipeline()
    print(f"model {model.name} threshold {model.threshold:.4f}")

    items = T.collect(args.data / "nuaa_train", args.data / "replay_crops")
    held = T.split(items)
    x, ok = T.extract(items, ROOT / ".cache" / "liveness" / "features.npz")
    labels = np.array([i[1] for i in items])
    use = held & ok
    r = pad_report(model.probability(x[use]), labels[use], model.threshold)
    print(f"heldout.counts {r.counts}")
    print(f"heldout.bpcer {r.bpcer:.4f}")
    for kind, rate in r.apcer.items():
        print(f"heldout.apcer.{kind} {rate:.4f}")
    print(f"heldout.acer {r.acer:.4f}")
    print(f"heldout.eer {r.eer:.4f}")

    videos = {"live": args.data / "replay_videos" / "apfol_real2.webm",
              "replay": args.data / "replay_videos" / "apfol_fake2_replay.webm"}
    per_video = {}
    timings = []
    for label, path in videos.items():
        if not path.is_file():
            continue
        scores = []
        with open_source(path) as source:
            for frame in source:
                faces = pipeline.detect(frame.image)
                if not len(faces):
                    scores.append(np.nan)
                    continue
                t = time.perf_counter()
                scores.append(model.score(frame.image, faces.boxes[0]).score)
                timings.append((time.perf_counter() - t) * 1000)
        per_video[label] = np.array(scores)
    if per_video:
        s = np.concatenate([v[~np.isnan(v)] for v in per_video.values()])
        lab = sum(([k] * int((~np.isnan(v)).sum()) for k, v in per_video.items()), [])
        rv = pad_report(s, lab, model.threshold)
        print(f"videos.frames {rv.counts} (same recordings as the training crops: not held out)")
        print(f"videos.bpcer_per_frame {rv.bpcer:.4f}")
        print(f"videos.apcer_per_frame.replay {rv.apcer.get('replay', float('nan')):.4f}")
        for label, v in per_video.items():
            live = np.nan_to_num(v, nan=0.0) >= model.threshold
            windows = np.convolve(live.astype(int), np.ones(3, int), "valid") == 3
            print(f"videos.{label}.share_of_3_frame_windows_passing {windows.mean():.4f}")
    if timings:
        print(f"passive.ms_per_face {statistics.median(timings):.2f}")


if __name__ == "__main__":
    main()
