"""Median milliseconds per stage of the chain, on real photos.

    python benchmarks/stages.py [--frames ../shared/datasets/nuaa_train/live] [--repeats 15]

Stages: decode (a 640x480 JPEG file), detection at 640x480 with every detector, dlib 5-point landmarks,
alignment to the 150x150 chip, embedding (ONNX engine and dlib reference, one face). Each figure is the
median over --repeats runs per image over several images, after one warm-up run. One figure per line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import numpy as np  # noqa: E402

from siamface.alignment import align  # noqa: E402
from siamface.detection import create_detector  # noqa: E402
from siamface.embedding import create_encoder  # noqa: E402
from siamface.image import load_image  # noqa: E402
from siamface.landmarks import predict_landmarks  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (model loading, caches)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=Path, default=HERE.parent.parent / "shared/datasets/nuaa_train/live")
    ap.add_argument("--images", type=int, default=4, help="how many photos to time on")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--detectors", default="retinaface,blazeface,blazeface-back,hog,mtcnn,haar,cnn,cnn-dlib")
    args = ap.parse_args()

    files = sorted(args.frames.rglob("*.jpg"))[:: 97][: args.images]
    if not files:
        sys.exit(f"no .jpg under {args.frames}")
    images = [load_image(f) for f in files]
    print(f"images {len(files)} ({images[0].shape[1]}x{images[0].shape[0]})")

    print(f"decode_jpeg_640x480_ms {statistics.median(median_ms(lambda f=f: load_image(f), args.repeats) for f in files):.2f}")
    for name in args.detectors.split(","):
        det = create_detector(name)
        reps = 3 if name == "cnn-dlib" else args.repeats
        ms = statistics.median(median_ms(lambda im=im: det.detect(im), reps) for im in images)
        print(f"detect.{name}_ms {ms:.1f}")

    det = create_detector("retinaface")
    faces = [det.detect(im)[:1] for im in images]
    pairs = [(im, f) for im, f in zip(images, faces) if len(f)]
    print(f"landmarks.dlib5_ms {statistics.median(median_ms(lambda im=im, f=f: predict_landmarks(im, f.boxes), args.repeats) for im, f in pairs):.2f}")
    print(f"align_ms {statistics.median(median_ms(lambda im=im, f=f: align(im, f.landmarks[0]), args.repeats) for im, f in pairs):.2f}")
    chips = np.stack([align(im, f.landmarks[0]) for im, f in pairs])
    for model in ("dlib-resnet", "dlib-resnet-reference"):
        enc = create_encoder(model)
        print(f"embed.{model}_ms_per_face {median_ms(lambda: enc.embed(chips[:1]), args.repeats):.1f}")
        batch = np.repeat(chips, 16 // len(chips) + 1, axis=0)[:16]
        print(f"embed.{model}_ms_per_face_batch16 {median_ms(lambda: enc.embed(batch), 5) / 16:.1f}")


if __name__ == "__main__":
    main()
