"""How often does `retinaface` find a face where there is none, with and without its fallback score?

    python benchmarks/fallback_false_faces.py [--data ../shared/datasets/celeba_ids] [--per-person 3]

RetinaFace counts a face above 0.8; when nothing in an image reaches 0.8, the candidates above 0.5 count
(``fallback_threshold``). The fallback finds small and blurred faces; the risk is a face "found" in a
faceless picture. ../shared has no faceless set, so faceless pictures are cut from real ones: in each
celeba_ids photo (the first --per-person photos of every identity), the faces found at 0.8 are enlarged
1.5x, and the largest strip of the photo left, right, above or below all of them (at least --min-side px
on both sides) is one faceless picture: clothes, hands, walls, sky, crowds out of focus. Each strip is
searched with the fallback off and on. A strip can still hold a real face that scored under 0.8 (a
blurred passer-by), so the rates are upper bounds of the false-face rate; `--save DIR` writes the strips
where only the fallback found something, to look at.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from siamface.datasets import folder_identities  # noqa: E402
from siamface.detection import create_detector  # noqa: E402
from siamface.image import load_image  # noqa: E402


def faceless_strip(image, boxes, min_side: int):
    """The largest strip of `image` outside every box (each enlarged 1.5x), or None."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = w, h, 0, 0
    for bx0, by0, bx1, by1 in boxes:
        cx, cy, half_w, half_h = (bx0 + bx1) / 2, (by0 + by1) / 2, 0.75 * (bx1 - bx0), 0.75 * (by1 - by0)
        x0, y0 = min(x0, cx - half_w), min(y0, cy - half_h)
        x1, y1 = max(x1, cx + half_w), max(y1, cy + half_h)
    x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(w, int(x1) + 1), min(h, int(y1) + 1)
    strips = [image[:, :x0], image[:, x1:], image[:y0, :], image[y1:, :]]
    strips = [s for s in strips if min(s.shape[:2]) >= min_side]
    return max(strips, key=lambda s: s.shape[0] * s.shape[1]) if strips else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets" / "celeba_ids"))
    ap.add_argument("--per-person", type=int, default=3)
    ap.add_argument("--min-side", type=int, default=48)
    ap.add_argument("--save", default=None, help="write the strips where only the fallback found a face here")
    args = ap.parse_args()

    strict = create_detector("retinaface", fallback_threshold=None)
    lenient = create_detector("retinaface")  # the default: fallback above 0.5
    photos = [p for files in folder_identities(args.data).values() for p in files[: args.per_person]]
    save = Path(args.save) if args.save else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    strips = found_strict = found_lenient = no_face = 0
    for path in photos:
        image = load_image(path)
        faces = strict.detect(image)
        if len(faces) == 0:
            no_face += 1
            continue
        strip = faceless_strip(image, faces.boxes, args.min_side)
        if strip is None:
            continue
        strip = strip.copy()
        strips += 1
        a, b = len(strict.detect(strip)), len(lenient.detect(strip))
        found_strict += a > 0
        found_lenient += b > 0
        if save and b and not a:
            cv2.imwrite(str(save / f"{path.parent.name}_{path.stem}.png"), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    print(f"photos: {len(photos)} from {args.data} ({no_face} with no face at 0.8, skipped)")
    print(f"faceless strips (>= {args.min_side} px a side, outside every face enlarged 1.5x): {strips}")
    print(f"a face found, fallback off (0.8 only): {found_strict} ({100 * found_strict / max(strips, 1):.2f} %)")
    print(f"a face found, fallback on (default):   {found_lenient} ({100 * found_lenient / max(strips, 1):.2f} %)")
    print(
        f"added by the fallback: {found_lenient - found_strict} (upper bounds: a strip may hold a real face under 0.8)"
    )


if __name__ == "__main__":
    main()
