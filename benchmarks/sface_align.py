"""SFace's accuracy under alignment and test-time variants, on every set, from the cached detections.

    python benchmarks/sface_align.py [--data ../shared/datasets] [--variants base,opencv,...]

Each variant changes only how the 112x112 chip is made from an image and its detected face (or, for
``flip``, averages the embeddings of the chip and its mirror image); the network is the product's
`SFaceEncoder`. Sets: celeba_ids split into the 100 fitting identities (``celeba-fit``, where choices are
made) and the 199 held-out identities (``celeba-test``, the table's; first 8 photos each, every pair),
AT&T and yale_faces (every pair) and deepface_pairs (its 300 pairs, the face nearest the centre); detector
retinaface (the table's cached detections). A missed face is a non-match. Prints EER and TAR at FAR 1e-3
and 1e-4 per set and variant, one line each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import _facecache as fc  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.alignment import _warp, keypoint_transform  # noqa: E402
from siamface.embedding.sface import ARCFACE_TEMPLATE, LANDMARKS_IN_CHIP, SFaceEncoder  # noqa: E402
from siamface.evaluation.metrics.roc import eer, tar_at_far  # noqa: E402
from siamface.image import load_image  # noqa: E402

N = 112
TEMPLATE = np.array(ARCFACE_TEMPLATE, np.float64)
LM_TEMPLATE = np.array(LANDMARKS_IN_CHIP, np.float64)


def _plain(image, m, flags=cv2.INTER_LINEAR):
    """OpenCV FaceRecognizerSF.alignCrop's warp: one warpAffine, no pyramid."""
    return cv2.warpAffine(image, m, (N, N), flags=flags | cv2.WARP_INVERSE_MAP, borderValue=0)


def chip_base(image, face, kps=None):
    """The product's chip (`siamface.alignment.align_keypoints`' warp)."""
    return _warp(image, keypoint_transform(face["kps"] if kps is None else kps, TEMPLATE), N)


def chip_opencv(image, face):
    return _plain(image, keypoint_transform(face["kps"], TEMPLATE))


def chip_cubic(image, face):
    return _plain(image, keypoint_transform(face["kps"], TEMPLATE), cv2.INTER_CUBIC)


def chip_ten(copies: int):
    """The least-squares similarity fitted on the five keypoints (counted `copies` times) onto the ArcFace
    template and dlib's five landmarks (once) onto where they land in that chip (LANDMARKS_IN_CHIP)."""

    def make(image, face):
        src = np.concatenate([face["kps"]] * copies + [face["lm"]])
        dst = np.concatenate([TEMPLATE] * copies + [LM_TEMPLATE])
        return _warp(image, keypoint_transform(src, dst), N)

    return make


def chip_refine(average: bool, below: float = np.inf):
    """A second retinaface pass on the face's region (twice the box's side) scaled so that the box is 160 px
    wide; its keypoints (of the face nearest the first pass's) replace the first pass's, or with `average`
    are averaged with them. Only for faces whose box's larger side is under `below` px."""

    def make(image, face):
        x1, y1, x2, y2 = face["box"]
        side = max(x2 - x1, y2 - y1)
        if side >= below:
            return chip_base(image, face)
        scale = 160.0 / side
        ox, oy = (x1 + x2) / 2 - side, (y1 + y2) / 2 - side
        m = np.array([[1 / scale, 0, ox + 0.5 / scale - 0.5], [0, 1 / scale, oy + 0.5 / scale - 0.5]])
        size = int(round(2 * side * scale))
        crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        found = _REFINER[0].detect(crop)
        kps = face["kps"]
        if len(found) and "keypoints" in found.data:
            k2 = np.asarray(found.data["keypoints"], np.float64) @ m[:, :2].T + m[:, 2]
            best = int(np.argmin(((k2 - kps[None]) ** 2).sum((1, 2))))
            if np.abs(k2[best] - kps).max() < side * 0.3:
                kps = (k2[best] + kps) / 2 if average else k2[best]
        return chip_base(image, face, kps)

    return make


_REFINER: list = []

VARIANTS = {
    "base": (chip_base, False),
    "opencv": (chip_opencv, False),
    "cubic": (chip_cubic, False),
    "ten1": (chip_ten(1), False),
    "ten2": (chip_ten(2), False),
    "flip": (chip_base, True),
    "refine": (chip_refine(False), False),
    "refineavg": (chip_refine(True), False),
    "refine112": (chip_refine(False, below=112), False),
}


def sets(data: Path):
    files, labels = fc.celeba_files(data / "celeba_ids")
    fit = fc.fit_split(labels)
    yield "celeba-fit", data / "celeba_ids", [f for f, k in zip(files, fit) if k], labels[fit], None, "largest"
    yield "celeba-test", data / "celeba_ids", [f for f, k in zip(files, ~fit) if k], labels[~fit], None, "largest"
    yield "att", data / "att_faces", *fc.att_files(data / "att_faces"), None, "largest"
    yield "yale", data / "yale_faces", *fc.yale_files(data / "yale_faces"), None, "largest"
    deep = data / "deepface_pairs" / "dataset"
    rows = [line.split(",") for line in (deep / "master.csv").read_text().split("\n")[1:] if line.strip()]
    pairs = [(a, b, int(d.strip() == "Yes")) for a, b, d in rows]
    files = sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs})
    yield "deepface", deep, files, None, pairs, "centre"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--sets", default="celeba-fit,celeba-test,att,yale,deepface")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    wanted = set(args.sets.split(","))
    det = Pipeline(detector="retinaface").detector
    _REFINER.append(det)
    encoder = SFaceEncoder()
    for name, root, files, labels, pairs, how in sets(Path(args.data)):
        if name not in wanted:
            continue
        dets = fc.detections(root, files, det, "retinaface")
        faces = {}
        for f in files:
            d = dets[f]
            if d is None or not len(d) or "keypoints" not in d.data:
                continue
            image = load_image(root / f)
            k = d.chosen(how, image.shape)
            faces[f] = (
                image,
                {
                    "kps": np.asarray(d.data["keypoints"][k], np.float64),
                    "lm": d.landmarks[k].astype(np.float64),
                    "box": d.boxes[k].astype(np.float64),
                },
            )
        i, j, y = fc.set_pairs(files, labels, pairs)
        print(
            f"# {name}: {len(files)} images, {len(faces)} with a face, {int(y.sum())}/{int((1 - y).sum())} pairs",
            flush=True,
        )
        for v in variants:
            make, flip = VARIANTS[v]
            names = list(faces)
            chips = np.stack([make(*faces[f]) for f in names])
            e = encoder.embed(chips)
            if flip:
                e = e + encoder.embed(np.ascontiguousarray(chips[:, :, ::-1]))
                e /= np.linalg.norm(e, axis=1, keepdims=True)
            emb = np.full((len(files), e.shape[1]), np.nan, np.float32)
            pos = {f: n for n, f in enumerate(files)}
            emb[[pos[f] for f in names]] = e
            s = fc.pair_scores(emb, i, j)
            cells = [f"{eer(s, y)[0]:.2%}"]
            for far in (1e-3, 1e-4):
                t = tar_at_far(s, y, far)
                cells.append(f"{t.tar:.2%}" if t.supported else "n/a")
            print(f"{name}.{v} eer {cells[0]} tar1e-3 {cells[1]} tar1e-4 {cells[2]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
