"""Per-frame figures of the default passive check alone, on a colour camera and in the grey camera mode, on data
no threshold was chosen on: the rows of `benchmarks/liveness.py`'s held-out table for the default, without the
training split's cues (that script computes every cue of every item first; this one reads only what it reports).

    python benchmarks/liveness_frames.py [--data ../shared/datasets]

Rows (an error is a live face refused, or an attack face called live; ISO/IEC 30107-3 APCER / BPCER per frame):

* held out by `siamface.liveness.train.split`: NUAA subjects 0007-0009 (live, printed photo), the last 3 of 10
  blocks of the replay crops (live, phone replay), the last third of celeba_ids' people, every 3rd photo (live);
  each image's largest face (a crop with no face found: the crop less a 10 % margin, as `train.cue_table`);
* other cameras: the videos_hamilton clip (every 2nd frame, every face >= 40 px), deepface_pairs' photos (every
  face >= 40 px), replay_videos' live and phone-replay recordings (every frame, the largest face).

``colour``: `PassiveCheck()`; ``grey``: `PassiveCheck(camera="grey")` on the frame read as a grey camera gives it
(`colour.to_grey`).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    args = ap.parse_args()

    from siamface import Pipeline
    from siamface.detection import create_detector
    from siamface.image import load_image
    from siamface.liveness import PassiveCheck
    from siamface.liveness import train as T
    from siamface.liveness.colour import to_grey
    from siamface.liveness.evaluate import video_frames

    checks = {"colour": PassiveCheck(), "grey": PassiveCheck(camera="grey")}
    verdicts: dict[tuple[str, str, str], list[bool]] = defaultdict(list)

    def judge(row: str, label: str, image: np.ndarray, box) -> None:
        for mode, check in checks.items():
            seen = image if mode == "colour" else to_grey(image)
            verdicts[(row, label, mode)].append(bool(check.score(seen, box).live))

    data = args.data
    items = T.collect(data / "nuaa_train", data / "replay_crops", [data / "celeba_ids"], live_every=3)
    detector = create_detector("retinaface", min_face_size=16)
    for i in np.flatnonzero(T.split(items)):
        path, label, group, is_crop = items[i]
        image = load_image(path)
        faces = detector.detect(image)
        if len(faces):
            box = faces.boxes[int(np.argmax(faces.areas))]
        elif is_crop:
            h, w = image.shape[:2]
            box = np.array([w * 0.1, h * 0.1, w * 0.9, h * 0.9])
        else:
            continue
        judge("held out " + T.source_of(group).replace("live:", ""), label, image, box)

    pipeline = Pipeline()
    streams = {
        ("videos_hamilton, every 2nd frame", "live"): (
            video_frames(data / "videos_hamilton/short_hamilton_clip.mp4", 10**4),
            2,
            True,
        ),
        ("deepface_pairs photos", "live"): (
            (load_image(p) for p in sorted((data / "deepface_pairs/dataset").glob("*.jpg"))),
            1,
            True,
        ),
        ("replay_videos frames", "live"): (video_frames(data / "replay_videos/apfol_real2.webm", 10**4), 1, False),
        ("replay_videos frames", "replay"): (
            video_frames(data / "replay_videos/apfol_fake2_replay.webm", 10**4),
            1,
            False,
        ),
    }
    for (row, label), (images, every, all_faces) in streams.items():
        for f, image in enumerate(images):
            faces = pipeline.detect(image) if f % every == 0 else []
            if not len(faces):
                continue
            largest = int(np.argmax(faces.areas))
            for j in range(len(faces)) if all_faces else [largest]:
                if faces.boxes[j][2] - faces.boxes[j][0] >= 40 or not all_faces:
                    judge(row, label, image, faces.boxes[j])

    print("per frame: errors / faces (APCER for attack faces called live, BPCER for live faces refused)")
    for (row, label, mode), values in sorted(verdicts.items()):
        live = np.array(values)
        wrong = ~live if label == "live" else live
        what = "BPCER" if label == "live" else "APCER"
        print(f"{what} {row} {label} [{mode} camera]: {wrong.mean():.1%} ({int(wrong.sum())}/{len(wrong)})")


if __name__ == "__main__":
    main()
