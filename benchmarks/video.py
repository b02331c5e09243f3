"""Real-time figures: frames per second processed and capture-to-decision latency (p50/p99), for a 640x480
clip with 1 face and with 5 faces, and for the real two-person clip of videos_hamilton.

    python benchmarks/video.py [--frames 150] [--repeats 3] [--hamilton ../shared/datasets/videos_hamilton]

Clips are made here from the bundled AT&T faces (tests/fixtures/att, held-out image 1 of each person, moving
and zooming in a textured 640x480 scene); the gallery enrolls images 2-4 of each person.
Two modes, each the median of --repeats runs:
* ``all``   every frame of the file as fast as it goes: throughput (fps); latency = read to decision;
* ``camera`` the file paced at 30 fps like a webcam, newest frame wins: fps processed, frames dropped,
             latency from capture to decision (what a user in front of the camera waits).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import att, att_rgb, scene  # noqa: E402

PEOPLE = (3, 4, 5, 7, 8)


def make_clip(path: Path, faces: int, frames: int, fps: float = 30.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    for i in range(frames):
        if faces == 1:
            placed = [(att_rgb(PEOPLE[0], 1), 1.8 + 0.4 * i / frames, (100 + i % 200, 80 + (i // 3) % 60))]
        else:
            placed = [
                (att_rgb(s, 1), 1.15, (20 + 125 * k, 60 + 150 * (k % 2) + (i % 30))) for k, s in enumerate(PEOPLE)
            ]
        writer.write(cv2.cvtColor(scene(placed), cv2.COLOR_RGB2BGR))
    writer.release()


def measure(pipeline, gallery, clip: Path, realtime: bool, repeats: int) -> dict:
    from siamface.live import GalleryMatcher, Watcher, run
    from siamface.video import LatestFrameReader, open_source

    runs = []
    for _ in range(repeats):
        watcher = Watcher(pipeline, GalleryMatcher(gallery))
        used = time.process_time()
        with LatestFrameReader(open_source(clip), realtime=realtime) as reader:
            stats = run(reader, watcher, reader=reader)
        # the whole process's CPU time (capture and decoding included) per frame processed: what a frame costs
        # whatever else the machine runs
        runs.append({**stats.to_dict(), "cpu_ms_per_frame": 1000 * (time.process_time() - used) / stats.frames})
    return {key: statistics.median(r[key] for r in runs) for key in runs[0] if runs[0][key] is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None, help="encoder (default: the default model)")
    ap.add_argument("--no-5face", action="store_true", help="skip the 5-face clip")
    ap.add_argument("--no-keypoint-refinement", action="store_true", help="small faces aligned on the first keypoints")
    ap.add_argument("--hamilton", type=Path, default=ROOT.parent / "shared" / "datasets" / "videos_hamilton")
    args = ap.parse_args()

    from siamface import Pipeline
    from siamface.gallery import Gallery

    options = {"refine_below": None} if args.no_keypoint_refinement else {}
    pipeline = Pipeline(model=args.model, **options) if args.model else Pipeline(**options)
    print(f"model {pipeline.encoder.info.name}, detector {pipeline.detector.name}")
    print(f"load average {' / '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with Gallery(tmp / "people.db", pipeline, create=True) as gallery:
            for s in PEOPLE:
                gallery.enroll(f"s{s}", [att(s, i) for i in (2, 3, 4)])
            for faces in (1,) if args.no_5face else (1, 5):
                clip = tmp / f"clip{faces}.avi"
                make_clip(clip, faces, args.frames)
                for mode, realtime in (("all", False), ("camera", True)):
                    r = measure(pipeline, gallery, clip, realtime, args.repeats)
                    name = f"video.{faces}face.{mode}"
                    print(f"{name}.fps {r['fps']:.1f}")
                    print(f"{name}.latency_ms_p50 {r['latency_ms_p50']:.1f}")
                    print(f"{name}.latency_ms_p99 {r['latency_ms_p99']:.1f}")
                    print(f"{name}.faces_embedded {r['faces_embedded']:.0f} of {r['frames']:.0f} frames")
                    print(f"{name}.cpu_ms_per_frame {r['cpu_ms_per_frame']:.1f}")
                    if realtime:
                        print(f"{name}.dropped {r['dropped']:.0f}")
        hamilton = args.hamilton / "short_hamilton_clip.mp4"
        if hamilton.is_file():
            with Gallery(tmp / "hamilton.db", pipeline, create=True) as gallery:
                for photo in sorted(args.hamilton.glob("*.png")):
                    gallery.enroll(photo.stem, [photo])
                for mode, realtime in (("all", False), ("camera", True)):
                    r = measure(pipeline, gallery, hamilton, realtime, args.repeats)
                    print(f"video.hamilton_640x360.{mode}.fps {r['fps']:.1f}")
                    print(f"video.hamilton_640x360.{mode}.latency_ms_p50 {r['latency_ms_p50']:.1f}")
                    print(f"video.hamilton_640x360.{mode}.latency_ms_p99 {r['latency_ms_p99']:.1f}")


if __name__ == "__main__":
    main()
