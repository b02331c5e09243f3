"""Embedding cost per face (crop included) of SFace candidates beside the former default, interleaved.

    python benchmarks/sface_cost.py [--frames ../shared/datasets/nuaa_train/live] [--rounds 40]

Each round times, once each and in turn, the crop + embedding of one detected face (retinaface, a
640x480 photo; the photo changes every round) by every chain: `dlib-flip+facenet` (the former default,
the cost gate's reference, benchmarks/DEFAULT_RULE.md), `sface`, `sface` with flip averaging,
`dlib-resnet`, `sface+dlib` (SFace and dlib's ResNet without flip, fused) and `sface+dlib-flip`, as registered
(`sface+dlib` runs its parts side by side, `siamface.embedding.fused`); the same fusions with the other
scheduling, for comparison (``sequential``: one part after the other, all threads each; ``side by side``: each
part on its own thread, the first with all the intra-op threads, the others with their share), `sface+dlib`
side by side with one intra-op thread for each part (``one thread each``: its scheduling before SFace was given
both threads); and a
second retinaface pass on the face's region (twice the box's side) scaled so that the box is 160 px wide,
what refining the keypoints of a small face would add (benchmarks/sface_align.py, ``refine``), and the
product's pass (`RetinaFaceDetector.refine_keypoints` with its defaults, its crop included; the gate's faces
are larger than its ``refine_below``, so the pipeline does not run it on them: here it is forced). Prints per
chain the median, the fastest time and the 25th percentile over the rounds, each also as a ratio of the
reference's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from siamface.detection import create_detector  # noqa: E402
from siamface.embedding import create_encoder, encoder_chips  # noqa: E402
from siamface.embedding.fused import DLIB_FLIP_FACENET, SFACE_DLIB, SFACE_DLIB_FLIP, FusedEncoder  # noqa: E402
from siamface.image import load_image  # noqa: E402

CHAINS = (
    ("dlib-flip+facenet", "dlib-flip+facenet", False),
    ("sface", "sface", False),
    ("sface-flip", "sface", True),
    ("dlib-resnet", "dlib-resnet", False),
    ("sface+dlib", "sface+dlib", False),
    ("sface+dlib-flip", "sface+dlib-flip", False),
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=Path, default=HERE.parent.parent / "shared/datasets/nuaa_train/live")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args(argv)
    files = sorted(args.frames.rglob("*.jpg"))[::97][: args.images]
    det = create_detector("retinaface")
    pairs = [(im, det.detect(im)[:1]) for im in map(load_image, files)]
    pairs = [(im, f) for im, f in pairs if len(f)]
    encoders = {name: create_encoder(model, flip=flip) for name, model, flip in CHAINS}
    for fusion in (SFACE_DLIB, SFACE_DLIB_FLIP, DLIB_FLIP_FACENET):
        other = "sequential" if fusion.concurrent else "side by side"
        encoders[f"{fusion.name} {other}"] = FusedEncoder(replace(fusion, concurrent=not fusion.concurrent))
    each = FusedEncoder(SFACE_DLIB)
    each.parts[0] = create_encoder(SFACE_DLIB.parts[0][0], num_threads=1, **SFACE_DLIB.parts[0][1])
    encoders[f"{SFACE_DLIB.name} one thread each"] = each

    def once(enc, im, f) -> float:
        t = time.perf_counter()
        enc.embed(encoder_chips(enc, im, f.boxes, f.landmarks, f.data.get("keypoints")))
        return (time.perf_counter() - t) * 1000

    for enc in encoders.values():  # warm-up: sessions, conversions
        once(enc, *pairs[0])
    crops = [_region(im, f.boxes[0]) for im, f in pairs]

    def refine(crop) -> float:
        t = time.perf_counter()
        det.detect(crop)
        return (time.perf_counter() - t) * 1000

    refine(crops[0])
    # the product's pass (`RetinaFaceDetector.refine_keypoints`, crop included), forced on these large faces
    small = create_detector("retinaface", refine_below=1e9)

    def product_pass(im, f) -> float:
        t = time.perf_counter()
        small.refine_keypoints(im, f.boxes, f.data["keypoints"])
        return (time.perf_counter() - t) * 1000

    product_pass(*pairs[0])
    passed = f"refine pass {small.refine_region:g}x{small.refine_box} (the product's)"
    times: dict[str, list[float]] = {name: [] for name in [*encoders, "refine pass", passed]}
    for r in range(args.rounds):
        im, f = pairs[r % len(pairs)]
        for name, enc in encoders.items():
            times[name].append(once(enc, im, f))
        times["refine pass"].append(refine(crops[r % len(pairs)]))
        times[passed].append(product_pass(im, f))
    ref = CHAINS[0][0]
    med_ref, min_ref, q_ref = statistics.median(times[ref]), min(times[ref]), np.percentile(times[ref], 25)
    print(f"images {len(pairs)} rounds {args.rounds}")
    for name, t in times.items():
        med, low, q = statistics.median(t), min(t), np.percentile(t, 25)
        print(
            f"{name}: median {med:.1f} ms ({med / med_ref:.2f}x), fastest {low:.1f} ms ({low / min_ref:.2f}x), "
            f"25th percentile {q:.1f} ms ({q / q_ref:.2f}x)"
        )
    return 0


def _region(image, box):
    """The face's region, twice its box's larger side, scaled so that the box is 160 px wide."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1)
    scale = 160.0 / side
    m = np.array([[1 / scale, 0, (x1 + x2) / 2 - side], [0, 1 / scale, (y1 + y2) / 2 - side]])
    size = int(round(2 * side * scale))
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


if __name__ == "__main__":
    raise SystemExit(main())
