"""Fit a detector's ``landmark_box``: how its boxes map to the HOG-style boxes dlib's landmark model expects.

    python benchmarks/landmark_box.py --detector blazeface [--data ../shared/datasets/celeba_ids] [--photos 320]

On --photos celeba_ids photos that benchmarks/detectors.py does not use (from the 9th photo of each
identity on), faces found by both the detector and dlib's HOG detector (1 upsample) are paired when the
HOG box's centre lies inside the detector's box. For each pair: dx, dy = offset of the HOG centre from the
detector's centre in units of its width and height, side = HOG side / sqrt(width * height). Prints the
medians (the ``landmark_box`` tuple) and the number of pairs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from siamface.detection import create_detector  # noqa: E402
from siamface.evaluation.protocols import folder_identities  # noqa: E402
from siamface.image import load_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", required=True)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared/datasets/celeba_ids")
    ap.add_argument("--photos", type=int, default=320)
    ap.add_argument("--skip-per-id", type=int, default=8, help="photos per identity left to detectors.py")
    args = ap.parse_args()
    rest = [p for files in folder_identities(args.data).values() for p in files[args.skip_per_id :]]
    photos = [rest[i] for i in np.linspace(0, len(rest) - 1, min(args.photos, len(rest))).astype(int)]
    det, hog = create_detector(args.detector), create_detector("hog", upsample=1)
    rows = []
    for path in photos:
        image = load_image(path)
        a, h = det.detect(image), hog.detect(image)
        if not len(a) or not len(h):
            continue
        x1, y1, x2, y2 = a.boxes[0]
        hx1, hy1, hx2, hy2 = h.boxes[0]
        hc = np.array([(hx1 + hx2) / 2, (hy1 + hy2) / 2])
        if not (x1 <= hc[0] <= x2 and y1 <= hc[1] <= y2):
            continue
        w, ht = x2 - x1, y2 - y1
        rows.append(
            [
                (hc[0] - (x1 + x2) / 2) / w,
                (hc[1] - (y1 + y2) / 2) / ht,
                np.sqrt((hx2 - hx1) * (hy2 - hy1)) / np.sqrt(w * ht),
            ]
        )
    dx, dy, side = np.median(np.array(rows), axis=0)
    print(f"{args.detector}.pairs {len(rows)}/{len(photos)}")
    print(f"{args.detector}.landmark_box ({dx:.3f}, {dy:.3f}, {side:.2f})")


if __name__ == "__main__":
    main()
