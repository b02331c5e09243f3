"""Enrolment minimum: what a small enrolment face costs.

Run: python benchmarks/enrol_min_face.py DATASETS/celeba_ids 150

The first N celeba_ids identities with two photos: the template is photo 1 scaled down so that its face's
shorter side is S px (on a grey canvas), the probe is photo 2 at full size (genuine), and photo 2 of the
next identity (impostor). Prints, per S, the faces no longer found and TAR / FAR at the default model's 1:1
threshold.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from siamface import Pipeline
from siamface.errors import NoFaceError


def _embed(pipe: Pipeline, image):
    try:
        return pipe.embed_largest(image)[0].embeddings[0]
    except NoFaceError:
        return None


def main() -> int:
    root, n = Path(sys.argv[1]), int(sys.argv[2])
    ids = [d for d in sorted(root.iterdir()) if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2][:n]
    pipe = Pipeline()
    pairs = []  # (template image, its face side, probe embedding)
    for d in ids:
        first, second = sorted(d.glob("*.jpg"))[:2]
        probe = _embed(pipe, second)
        image = np.asarray(Image.open(first).convert("RGB"))
        faces = pipe.detect(image)
        if probe is None or not len(faces.boxes):
            continue
        x1, y1, x2, y2 = faces.boxes[0]
        pairs.append((image, float(min(x2 - x1, y2 - y1)), probe))
    print(f"{len(pairs)} identities, threshold {pipe.threshold}")
    for size in (24, 32, 40, 50, 60, 80):
        genuine, impostor, missed = [], [], 0
        for k, (image, side, probe) in enumerate(pairs):
            f = min(1.0, size / side)
            w, h = max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f))
            small = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
            canvas = np.full((max(h, 240), max(w, 320), 3), 128, np.uint8)
            canvas[:h, :w] = small
            template = _embed(pipe, canvas)
            if template is None:
                missed += 1
                continue
            genuine.append(float(template @ probe))
            impostor.append(float(template @ pairs[(k + 1) % len(pairs)][2]))
        g, i = np.array(genuine), np.array(impostor)
        print(
            f"face {size:3d} px: no face {missed:3d}, TAR {np.mean(g >= pipe.threshold):.3f} "
            f"(median genuine {np.median(g):.3f}), FAR {np.mean(i >= pipe.threshold):.3f} of {len(g)} pairs"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
