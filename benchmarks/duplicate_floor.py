"""The near-duplicate similarity of a model: how alike a copy of a photo is to it, against two photos of one person.

    python benchmarks/duplicate_floor.py [--models sface sface+dlib] [--root tests/fixtures/att]

Data: the AT&T photos of subjects s3-s10 in the test fixtures (4 each, 32 photos; every face is under 112 px,
so SFace's keypoint refinement is in play). A copy is the same photo moved 1, 2 or 3 px sideways (rolled) or
saved as JPEG at quality 80; a different photo is another of the same person's photos. Prints, per model, the
copies' similarity to their original (minimum, median, share above the model's `duplicate` setting and above
candidate values) and the highest similarity of two different photos of one person: the setting must sit
above the latter (a second genuine photo is never a duplicate) and under most copies.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _variants(rgb: np.ndarray) -> list[np.ndarray]:
    from PIL import Image

    out = [np.ascontiguousarray(np.roll(rgb, s, axis=1)) for s in (1, 2, 3)]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=80)
    out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return out


def _embedding(pipeline, rgb: np.ndarray) -> np.ndarray:
    faces = pipeline.embed(rgb)
    if len(faces.embeddings) != 1:
        raise SystemExit(f"expected one face, found {len(faces.embeddings)}")
    return faces.embeddings[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["sface", "sface+dlib"])
    parser.add_argument("--root", default=str(ROOT / "tests" / "fixtures" / "att"))
    args = parser.parse_args(argv)
    from PIL import Image

    from siamface import Pipeline

    people = [Path(args.root) / f"s{i}" for i in range(3, 11)]
    photos = {p.name: [np.asarray(Image.open(f).convert("RGB")) for f in sorted(p.glob("*.pgm"))] for p in people}
    for model in args.models:
        pipeline = Pipeline(model=model)
        setting = pipeline.encoder.info.duplicate
        copies, different = [], []
        for rgbs in photos.values():
            originals = [_embedding(pipeline, rgb) for rgb in rgbs]
            for rgb, e in zip(rgbs, originals):
                copies += [float(_embedding(pipeline, v) @ e) for v in _variants(rgb)]
            different += [float(a @ b) for a, b in itertools.combinations(originals, 2)]
        c = np.array(copies)
        print(f"{model}: setting {setting}")
        print(
            f"  copies ({len(c)}): min {c.min():.4f}, median {np.median(c):.4f}, above the setting {np.mean(c > setting):.0%}"
        )
        for t in (0.97, 0.975, 0.98, 0.985, 0.99, 0.995):
            print(f"    above {t}: {np.mean(c > t):.0%}")
        print(f"  two different photos of one person ({len(different)}): at most {max(different):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
