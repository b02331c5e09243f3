"""Median milliseconds per stage of the chain, on real photos.

    python benchmarks/stages.py [--frames ../shared/datasets/nuaa_train/live] [--repeats 15]

Stages: decode (a 640x480 JPEG file), detection at 640x480 with every detector, dlib 5-point landmarks,
alignment to the 150x150 chip, embedding of one face by each model (--models; its chips already cut: for
the fused model both parts' chips), and crop + embedding of one face (``embed_face``: what the chain
spends after detection). Each figure is the median over --repeats runs per image over several images, after
one warm-up run. One figure per line.
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
from siamface.embedding import create_encoder, encoder_chips  # noqa: E402
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
    ap.add_argument("--detectors", default="retinaface,yunet,blazeface,blazeface-back,hog,mtcnn,haar,cnn,cnn-dlib")
    ap.add_argument("--models", default="dlib-resnet,dlib-resnet-reference,facenet,dlib+facenet")
    ap.add_argument("--flip", action="store_true", help="also time each model with flip averaging")
    args = ap.parse_args()

    files = sorted(args.frames.rglob("*.jpg"))[::97][: args.images]
    if not files:
        sys.exit(f"no .jpg under {args.frames}")
    images = [load_image(f) for f in files]
    print(f"images {len(files)} ({images[0].shape[1]}x{images[0].shape[0]})")

    print(
        f"decode_jpeg_640x480_ms {statistics.median(median_ms(lambda f=f: load_image(f), args.repeats) for f in files):.2f}"
    )
    for name in args.detectors.split(","):
        det = create_detector(name)
        reps = 3 if name == "cnn-dlib" else args.repeats
        ms = statistics.median(median_ms(lambda im=im: det.detect(im), reps) for im in images)
        print(f"detect.{name}_ms {ms:.1f}")

    det = create_detector("retinaface")
    faces = [det.detect(im)[:1] for im in images]
    pairs = [(im, f) for im, f in zip(images, faces) if len(f)]
    print(
        f"landmarks.dlib5_ms {statistics.median(median_ms(lambda im=im, f=f: predict_landmarks(im, f.boxes), args.repeats) for im, f in pairs):.2f}"
    )
    print(
        f"align_ms {statistics.median(median_ms(lambda im=im, f=f: align(im, f.landmarks[0]), args.repeats) for im, f in pairs):.2f}"
    )
    for model in args.models.split(","):
        fused = bool(getattr(create_encoder(model), "chip_specs", None))  # flip is set per part there
        for flip in (False, True) if args.flip and not fused else (False,):
            enc = create_encoder(model, flip=flip)
            name = model + ("+flip" if flip else "")
            chips = [encoder_chips(enc, im, f.boxes, f.landmarks, f.data.get("keypoints")) for im, f in pairs]
            one = chips[0]
            print(f"embed.{name}_ms_per_face {median_ms(lambda: enc.embed(one), args.repeats):.1f}")
            ms = statistics.median(
                median_ms(
                    lambda im=im, f=f: enc.embed(encoder_chips(enc, im, f.boxes, f.landmarks, f.data.get("keypoints"))),
                    args.repeats,
                )
                for im, f in pairs
            )
            print(f"embed_face.{name}_ms {ms:.1f}")
            if model != "dlib-resnet-reference":
                batch = _batch(chips, 16)
                print(f"embed.{name}_ms_per_face_batch16 {median_ms(lambda: enc.embed(batch), 5) / 16:.1f}")


def _batch(chips: list, n: int):
    """n faces' chips from a list of per-image chips (arrays, or tuples of arrays for a fused model)."""
    if isinstance(chips[0], tuple):
        return tuple(_batch([c[k] for c in chips], n) for k in range(len(chips[0])))
    return np.repeat(np.concatenate(chips), n // len(chips) + 1, axis=0)[:n]


if __name__ == "__main__":
    main()
