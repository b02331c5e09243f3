"""SFace with the keypoints of small faces found again by a second retinaface pass, alone and fused with dlib.

    python benchmarks/sface_refine.py [--data ../shared/datasets] [--passes 2x160,2x112,1.5x112]
                                      [--below 0,96,112,128,150,inf]

A pass ``RxB`` is `RetinaFaceDetector.refine_keypoints` with ``refine_region`` R and ``refine_box`` B (the
face's region, R times its box's larger side, scaled so that the box is B px); ``--below`` the sizes under
which a face is refined (0: never, as `sface` before; inf: every face). Each face's chip and embedding depend
only on its own keypoints, so the refined and first-pass embeddings of every face are computed once per pass
(cached in the bench cache) and combined per threshold. Sets and pairs as benchmarks/sface_align.py (the
table's: celeba_ids fitting identities ``celeba-fit``, held-out ``celeba-test``, AT&T, yale_faces,
deepface_pairs; retinaface's cached detections, a missed face is a non-match).

Every choice is made on the fitting identities only, by the rule of benchmarks/sface_fit.py (lowest FRR at
FAR 1e-3 + EER): the threshold ``below`` for `sface` alone, and for each threshold the weight of SFace's part
in ``sface+dlib`` and ``sface+dlib-flip`` (a 0.05 grid). Printed per chain: EER / TAR @ FAR 1e-3 / TAR @
1e-4 on every set, and open_set.py's 1:N protocol on the held-out identities (rank-1, FNIR at FPIR 1 %).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import _facecache as fc  # noqa: E402
from fusion_fit import GRID, model_embeddings  # noqa: E402
from open_set import open_set  # noqa: E402
from sface_align import sets  # noqa: E402

from siamface.detection.retinaface import RetinaFaceDetector  # noqa: E402
from siamface.embedding import encoder_chips  # noqa: E402
from siamface.embedding.sface import SFaceEncoder  # noqa: E402
from siamface.evaluation.metrics import eer, tar_at_far  # noqa: E402
from siamface.image import load_image  # noqa: E402


def refined_embeddings(name, root, files, dets, how, passes, encoder):
    """{pass: (n, 128) embeddings from refined keypoints}, the first pass's (n, 128) and each face's box side
    (NaN rows and sides: no face); cached per set and pass."""
    out, side, base = {}, np.full(len(files), np.nan), None
    for p in ["base", *passes]:
        path = fc.CACHE / f"{root.name}-sface-refine-{p}-{how}.npz"
        if path.exists():
            d = np.load(path)
            if list(d["files"]) == list(files):
                out[p], side = d["emb"], d["side"]
                continue
        emb = np.full((len(files), 128), np.nan, np.float32)
        det = None
        if p != "base":
            r, b = p.split("x")
            det = RetinaFaceDetector(refine_below=1e9, refine_region=float(r), refine_box=int(b))
        for n, f in enumerate(files):
            d = dets[f]
            if d is None or not len(d) or "keypoints" not in d.data:
                continue
            image = load_image(root / f)
            k = d.chosen(how, image.shape)
            face = d[k : k + 1]
            kps = face.data["keypoints"]
            if det is not None:
                kps = det.refine_keypoints(image, face.boxes, kps)
            box = face.boxes[0]
            side[n] = max(box[2] - box[0], box[3] - box[1])
            emb[n] = encoder.embed(encoder_chips(encoder, image, face.boxes, face.landmarks, kps))[0]
            fc._progress(f"{name} {p}", n + 1, len(files))
        np.savez(path, files=np.array(files), emb=emb, side=side)
        out[p] = emb
    base = out.pop("base")
    return out, base, side


def cost(s, y):
    e, t = eer(s, y)[0], tar_at_far(s, y, 1e-3).tar
    return (1 - t) + e


def cells(s, y):
    out = [f"{eer(s, y)[0]:.2%}"]
    for far in (1e-3, 1e-4):
        t = tar_at_far(s, y, far)
        out.append(f"{t.tar:.2%}" if t.supported else "n/a")
    return " / ".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    ap.add_argument("--passes", default="2x160,2x112,1.5x112")
    ap.add_argument("--below", default="0,96,112,128,150,inf")
    args = ap.parse_args(argv)
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    belows = [float(b) for b in args.below.split(",")]
    det = RetinaFaceDetector()
    encoder = SFaceEncoder()
    data = {}
    for name, root, files, labels, pairs, how in sets(Path(args.data)):
        dets = fc.detections(root, files, det, "retinaface")
        refined, base, side = refined_embeddings(name, root, files, dets, how, passes, encoder)
        dlib = {flip: model_embeddings("dlib-resnet", flip, root, files, dets, det) for flip in (False, True)}
        i, j, y = fc.set_pairs(files, labels, pairs)
        data[name] = dict(refined=refined, base=base, side=side, dlib=dlib, i=i, j=j, y=y, labels=labels)
        small = np.nanmean(side < 112)
        print(f"# {name}: {len(files)} images, {int(y.sum())}/{int((1 - y).sum())} pairs, {small:.0%} under 112 px")

    def sface_emb(name, p, below):
        d = data[name]
        pick = (d["side"] < below)[:, None]
        return np.where(pick, d["refined"][p], d["base"]) if p else d["base"]

    def scores(name, p, below, other, w):
        d = data[name]
        s = fc.pair_scores(sface_emb(name, p, below), d["i"], d["j"])
        if other is None:
            return s
        return w * s + (1 - w) * fc.pair_scores(d["dlib"][other], d["i"], d["j"])

    test = data["celeba-test"]
    labels = test["labels"]
    ids = np.unique(labels)
    unknown = set(np.random.default_rng(0).permutation(ids)[: round(0.2 * len(ids))].tolist())
    enrol = {}
    for k, lab in enumerate(labels):
        if lab not in unknown and lab not in enrol:
            enrol[lab] = k
    gallery = np.array(list(enrol.values()))
    probes = np.array([k for k in range(len(labels)) if k not in set(gallery.tolist())])
    mated = np.array([labels[k] not in unknown for k in probes])

    def one_to_n(p, below, other, w):
        def sim(e):
            return e[probes].astype(np.float64) @ e[gallery].astype(np.float64).T

        s = sim(sface_emb("celeba-test", p, below))
        if other is not None:
            s = w * s + (1 - w) * sim(test["dlib"][other])
        rank1, fnir, _ = open_set(s, labels[probes], labels[gallery], mated, 0.01)
        return f"rank-1 {rank1:.2%} FNIR@FPIR1% {fnir:.2%}"

    def report(label, p, below, other, w):
        row = [f"{label}:"]
        for name in data:
            row.append(f"{name} {cells(scores(name, p, below, other, w), data[name]['y'])}")
        row.append(one_to_n(p, below, other, w))
        print("  ".join(row), flush=True)

    fy = data["celeba-fit"]["y"]
    for p in [None, *passes]:
        for below in belows if p else [0.0]:
            if p and below == 0:
                continue
            tag = f"sface[{p or 'no refine'}{'' if not p else f' <{below:g}'}]"
            c = cost(scores("celeba-fit", p, below, None, 1.0), fy)
            print(f"choice-data {tag} fit cost {c:.4f}")
            report(tag, p, below, None, 1.0)
            for other, label in ((False, "dlib"), (True, "dlib-flip")):
                best = min(GRID, key=lambda w: (cost(scores("celeba-fit", p, below, other, w), fy), w))
                c = cost(scores("celeba-fit", p, below, other, best), fy)
                print(f"choice-data {tag}+{label} w {best:.2f} fit cost {c:.4f}")
                report(f"{tag}+{label} (w {best:.2f})", p, below, other, best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
