"""Fit the SFace fusions and calibrate SFace's thresholds, on training data only, by fusion_fit.py's rule.

    python benchmarks/sface_fit.py [--data ../shared/datasets]

Data as in fusion_fit.py: the 100 celeba_ids fitting identities (`_facecache.fit_split`, every pair among
their first 8 photos, retinaface) and AT&T (all pairs). For `sface+dlib-flip`, `sface+dlib` (dlib's ResNet
without flip, aligned from the detector's keypoints), `sface+facenet` (weight of SFace's part w over 0, 0.05,
..., 1) and `sface+dlib-flip+facenet` (weights on the same grid, summing to 1) it prints EER and TAR at FAR 1e-3 on the fitting identities for every weight and the choice (lowest FRR at
FAR 1e-3 + EER, as fusion_fit.py chooses); then, for `sface` and each chosen fusion, the thresholds at FAR
1e-3 and 1e-4 on both sets (the default is the stricter of the two, as for the other models); with
``--shipped``, for each fusion's shipped weights instead of the choice (a fusion's version names its weights,
so a gallery enrolled with it is bound to them). SFace's chips are made as the product makes them (retinaface's
keypoint refinement for small faces included, `RetinaFaceDetector.refine_keypoints`).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from fusion_fit import GRID, fit_sets  # noqa: E402

from siamface.evaluation.metrics import eer, tar_at_far, threshold_for_far  # noqa: E402

#: Each part: its encoder, flip averaging and options. `sface+dlib`'s dlib part is aligned from the detector's
#: keypoints (`siamface.embedding.dlib_resnet.DLIB_KEYPOINT_CHIP`), the other dlib parts from dlib's landmarks.
PARTS = {
    "sface": ("sface", False, {}),
    "dlib-flip": ("dlib-resnet", True, {}),
    "dlib": ("dlib-resnet", False, {"keypoints": True}),
    "facenet": ("facenet", False, {}),
}


def cost(s: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    e, t = eer(s, y)[0], tar_at_far(s, y, 1e-3).tar
    return (1 - t) + e, e, t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    ap.add_argument(
        "--shipped",
        action="store_true",
        help="thresholds for the weights the fusions ship with (siamface.embedding.fused), not the choices",
    )
    args = ap.parse_args(argv)
    sets = fit_sets(Path(args.data))
    y, ay = sets.y, sets.ay

    fit_s, att_s = {}, {}
    for key, (name, flip, options) in PARTS.items():
        fit_s[key], att_s[key] = sets.scores(name, flip, **options)
        _, e, t = cost(fit_s[key], y)
        print(f"{key}.eer {e:.4f}\n{key}.tar_at_far_0.001 {t:.4f}", flush=True)

    chosen: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {}
    for other in ("dlib-flip", "dlib", "facenet"):
        best = None
        for w in GRID:
            c, e, t = cost(w * fit_s["sface"] + (1 - w) * fit_s[other], y)
            print(f"fuse.sface.{other}.w{w:.2f}.eer {e:.4f}\nfuse.sface.{other}.w{w:.2f}.tar_at_far_0.001 {t:.4f}")
            if best is None or c < best[0] - 1e-9:
                best = (c, float(w))
        chosen[f"sface+{other}"] = (("sface", other), (best[1], round(1 - best[1], 2)))
        print(f"choice sface+{other} w={best[1]:.2f}", flush=True)
    best = None
    for w1, w2 in itertools.product(GRID, GRID):
        w3 = round(1 - w1 - w2, 2)
        if w3 < -1e-9:
            continue
        s = w1 * fit_s["sface"] + w2 * fit_s["dlib-flip"] + w3 * fit_s["facenet"]
        c, e, t = cost(s, y)
        print(f"fuse3.w{w1:.2f}/{w2:.2f}/{w3:.2f}.eer {e:.4f}  tar_at_far_0.001 {t:.4f}")
        if best is None or c < best[0] - 1e-9:
            best = (c, (float(w1), float(w2), w3))
    chosen["sface+dlib-flip+facenet"] = (("sface", "dlib-flip", "facenet"), best[1])
    print(f"choice sface+dlib-flip+facenet w={'/'.join(f'{w:.2f}' for w in best[1])}", flush=True)

    if args.shipped:  # the thresholds of the weights the models ship with (their versions name them)
        from siamface.embedding.fused import SFACE_DLIB, SFACE_DLIB_FLIP, SFACE_DLIB_FLIP_FACENET, SFACE_FACENET

        for f in (SFACE_DLIB_FLIP, SFACE_DLIB, SFACE_FACENET, SFACE_DLIB_FLIP_FACENET):
            chosen[f.name] = (chosen[f.name][0], f.part_weights())
    rows = {"sface": (("sface",), (1.0,))} | chosen
    for key, (parts, weights) in rows.items():
        s = sum(w * fit_s[p] for p, w in zip(parts, weights))
        sa = sum(w * att_s[p] for p, w in zip(parts, weights))
        _, e, t = cost(s, y)
        print(f"{key}.w{'/'.join(f'{w:.2f}' for w in weights)}.eer {e:.4f}  tar_at_far_0.001 {t:.4f}")
        for far in (1e-3, 1e-4):
            print(
                f"threshold.{key}.far_{far:g}.celeba_fit {threshold_for_far(s, y, far):.5f}  "
                f"tar {tar_at_far(s, y, far).tar:.4f}"
            )
            print(
                f"threshold.{key}.far_{far:g}.att {threshold_for_far(sa, ay, far):.5f}  tar {tar_at_far(sa, ay, far).tar:.4f}"
            )
    print(f"pairs celeba_fit {y.sum()} genuine / {(1 - y).sum()} impostor; att {ay.sum()} / {(1 - ay).sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
