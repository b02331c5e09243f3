"""Verify every pair of faces in a folder-per-person dataset and print how many decisions were right.

    python examples/verify_folder.py tests/fixtures/att [--detector retinaface] [--model sface+dlib-flip]

Uses only the public API: one `siamface.Pipeline`, reused for every image.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import siamface


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="one sub-folder of images per person")
    ap.add_argument("--detector", default=siamface.pipeline.DEFAULT_DETECTOR)
    ap.add_argument("--model", default=siamface.pipeline.DEFAULT_MODEL, help="default: %(default)s")
    args = ap.parse_args()

    pipe = siamface.Pipeline(detector=args.detector, model=args.model)
    files = sorted(p for p in args.folder.glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".pgm"})
    start = time.perf_counter()
    embeddings, missed = {}, []
    for f in files:
        try:
            embeddings[f] = pipe.embed_largest(f)[0].embeddings[0]
        except siamface.NoFaceError:
            missed.append(f)
    elapsed = time.perf_counter() - start
    thr = pipe.threshold
    right = {True: [0, 0], False: [0, 0]}
    for (fa, ea), (fb, eb) in itertools.combinations(embeddings.items(), 2):
        same = fa.parent == fb.parent
        right[same][0] += (float(ea @ eb) >= thr) == same
        right[same][1] += 1
    total_right = right[True][0] + right[False][0]
    total = right[True][1] + right[False][1]
    print(
        f"{len(files)} images of {len({f.parent for f in files})} people, {len(missed)} without a face "
        f"({elapsed / max(len(files), 1) * 1000:.0f} ms per image: detect + align + embed)"
    )
    print(f"threshold {thr:.4f} ({pipe.threshold_source})")
    print(f"same-person pairs accepted:   {right[True][0]}/{right[True][1]}")
    print(f"different-people pairs denied: {right[False][0]}/{right[False][1]}")
    print(f"accuracy: {total_right / max(total, 1):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
