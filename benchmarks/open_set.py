"""Open-set 1:N on celeba_ids held-out identities, every encoder and fusion: rank-1 and FNIR at FPIR 1 %.

    python benchmarks/open_set.py [--data ../shared/datasets] [--unknown 0.2] [--fpir 0.01]

The images and embeddings of `accuracy.py --table` (the first 8 photos of each of the 199 identities not
used for fitting, retinaface, the embedding cache of `_facecache`: run the table first). A seeded 20 % of
those identities are strangers (all their photos are non-mated probes); each other identity is enrolled
with its first photo and its other photos are mated probes. A probe's score against a person is its
cosine with that person's template (a fusion's: the weighted sum of its parts'). The threshold is set where
the share of strangers named (FPIR: best score at or above it) is `--fpir`; at it, FNIR is the share of
mated probes not named as their own person (best match another person, or below the threshold). rank-1:
mated probes whose best match is their own person. A photo without a face: as a probe, a miss (never
named); as an enrolment photo, its person has no template. One figure per line.
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

from siamface import Pipeline  # noqa: E402
from siamface.embedding.fused import (  # noqa: E402
    DLIB_FLIP_FACENET,
    SFACE_DLIB,
    SFACE_DLIB_FLIP,
    SFACE_DLIB_FLIP_FACENET,
    SFACE_FACENET,
)


def open_set(scores: np.ndarray, probe_ids: np.ndarray, gallery_ids: np.ndarray, mated: np.ndarray, fpir: float):
    """(rank-1, FNIR, threshold) from (probes, gallery) scores (NaN rows: probes without a face)."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    best = s.max(axis=1)
    top = gallery_ids[s.argmax(axis=1)]
    strangers = np.sort(best[~mated])[::-1]
    k = int(np.floor(fpir * len(strangers)))
    threshold = np.nextafter(strangers[k], np.inf) if k < len(strangers) else -np.inf
    ok = (top == probe_ids) & np.isfinite(best)
    rank1 = ok[mated].mean()
    fnir = 1.0 - (ok & (best >= threshold))[mated].mean()
    return float(rank1), float(fnir), float(threshold)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    ap.add_argument("--unknown", type=float, default=0.2)
    ap.add_argument("--fpir", type=float, default=0.01)
    args = ap.parse_args(argv)
    root = Path(args.data) / "celeba_ids"
    files, labels = fc.celeba_files(root)
    keep = ~fc.fit_split(labels)
    files, labels = [f for f, k in zip(files, keep) if k], labels[keep]
    det = Pipeline(detector="retinaface").detector
    dets = fc.detections(root, files, det, "retinaface")
    fusions = (DLIB_FLIP_FACENET, SFACE_DLIB_FLIP, SFACE_DLIB, SFACE_FACENET, SFACE_DLIB_FLIP_FACENET)
    parts = {}
    for key in sorted(
        {fc.part_key(n, {}) for n in ("dlib-resnet", "facenet", "sface")}
        | {fc.part_key(p, o) for f in fusions for p, o in f.parts}
    ):
        parts[key] = fc.embeddings(
            fc.part_tag(key), root, files, dets, Pipeline(detector=det, model=fc.part_encoder(key))
        )

    ids = np.unique(labels)
    unknown = set(np.random.default_rng(0).permutation(ids)[: round(args.unknown * len(ids))].tolist())
    enrol = {}
    for k, lab in enumerate(labels):
        if lab not in unknown and lab not in enrol:
            enrol[lab] = k
    gallery = np.array(list(enrol.values()))
    gallery_ids = labels[gallery]
    probes = np.array([k for k in range(len(labels)) if k not in set(gallery.tolist())])
    mated = np.array([labels[k] not in unknown for k in probes])
    print(f"gallery {len(gallery)} identities; probes {mated.sum()} mated, {(~mated).sum()} strangers")

    def cos(e: np.ndarray) -> np.ndarray:
        return e[probes].astype(np.float64) @ e[gallery].astype(np.float64).T

    sims = {key: cos(e) for key, e in parts.items()}
    rows = {n: sims[fc.part_key(n, {})] for n in ("dlib-resnet", "facenet", "sface")}
    for f in fusions:
        rows[f.name] = sum(w * sims[fc.part_key(p, o)] for (p, o), w in zip(f.parts, f.part_weights()))
    for name, s in rows.items():
        rank1, fnir, thr = open_set(s, labels[probes], gallery_ids, mated, args.fpir)
        print(f"{name}.rank1 {rank1:.4f}\n{name}.fnir_at_fpir_{args.fpir:g} {fnir:.4f}  (threshold {thr:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
