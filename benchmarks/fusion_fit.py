"""Fit the fused model and calibrate the new models' thresholds, on training data only.

    python benchmarks/fusion_fit.py [--data ../shared/datasets]

Data: the 100 fitting identities of celeba_ids (`_facecache.fit_split`; every genuine and impostor pair among
their first 8 photos) and, for the thresholds, AT&T (all pairs), as dlib-resnet's defaults were measured.
Prints, for dlib and FaceNet each with and without flip averaging, the weight w of
``w cos_dlib + (1 - w) cos_facenet`` over a grid with EER and TAR at FAR 1e-3 on the fitting identities;
the choice (lowest FRR at FAR 1e-3 + EER); the same weight without flip and with flip on dlib's part only (the
cheaper settings, for real time); and each model's thresholds at FAR 1e-3 and 1e-4.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _facecache import (  # noqa: E402
    all_pairs,
    att_files,
    celeba_files,
    detections,
    embeddings,
    fit_split,
    pair_scores,
    part_encoder,
    part_key,
    part_tag,
)

from siamface import Pipeline  # noqa: E402
from siamface.evaluation.metrics import eer, tar_at_far, threshold_for_far  # noqa: E402

GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)


def model_embeddings(name: str, flip: bool, root: Path, files: list[str], dets, detector, **options) -> np.ndarray:
    key = part_key(name, {"flip": flip, **options})
    return embeddings(part_tag(key), root, files, dets, Pipeline(detector=detector, model=part_encoder(key)))


@dataclass
class FitSets:
    """The data every choice of a fused model is made on: the celeba_ids fitting identities and AT&T, their
    retinaface detections and every pair (``i``, ``j``, ``y``; AT&T's ``ai``, ``aj``, ``ay``)."""

    det: object
    celeba: Path
    files: list[str]
    dets: dict
    i: np.ndarray
    j: np.ndarray
    y: np.ndarray
    att: Path
    afiles: list[str]
    adets: dict
    ai: np.ndarray
    aj: np.ndarray
    ay: np.ndarray

    def scores(self, name: str, flip: bool, **options) -> tuple[np.ndarray, np.ndarray]:
        """A model's pair scores on the fitting identities and on AT&T (`options`: the encoder's)."""
        emb = model_embeddings(name, flip, self.celeba, self.files, self.dets, self.det, **options)
        att = model_embeddings(name, flip, self.att, self.afiles, self.adets, self.det, **options)
        return pair_scores(emb, self.i, self.j), pair_scores(att, self.ai, self.aj)


def fit_sets(data: Path) -> FitSets:
    celeba, att = data / "celeba_ids", data / "att_faces"
    det = Pipeline(detector="retinaface").detector
    files, labels = celeba_files(celeba)
    fit = fit_split(labels)
    files_fit = [f for f, k in zip(files, fit) if k]
    afiles, alabels = att_files(att)
    return FitSets(
        det,
        celeba,
        files_fit,
        detections(celeba, files_fit, det, "retinaface"),
        *all_pairs(labels[fit]),
        att,
        afiles,
        detections(att, afiles, det, "retinaface"),
        *all_pairs(alabels),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    args = ap.parse_args(argv)
    sets = fit_sets(Path(args.data))
    y, ay = sets.y, sets.ay

    scores, att_scores = {}, {}
    for name in ("dlib-resnet", "facenet"):
        for flip in (False, True):
            key = f"{name}{'-flip' if flip else ''}"
            scores[key], att_scores[key] = sets.scores(name, flip)
            print(
                f"{key}.eer {eer(scores[key], y)[0]:.4f}\n{key}.tar_at_far_0.001 "
                f"{tar_at_far(scores[key], y, 1e-3).tar:.4f}",
                flush=True,
            )

    best = None
    for a in ("dlib-resnet", "dlib-resnet-flip"):
        for b in ("facenet", "facenet-flip"):
            for w in GRID:
                s = w * scores[a] + (1 - w) * scores[b]
                e, t = eer(s, y)[0], tar_at_far(s, y, 1e-3).tar
                print(f"fuse.{a}.{b}.w{w:.2f}.eer {e:.4f}\nfuse.{a}.{b}.w{w:.2f}.tar_at_far_0.001 {t:.4f}")
                cost = (1 - t) + e
                if best is None or cost < best[0] - 1e-9:
                    best = (cost, a, b, float(w))
    _, a, b, w = best
    print(f"choice {a} {b} w={w:.2f}")
    fused = w * scores[a] + (1 - w) * scores[b]
    fused_att = w * att_scores[a] + (1 - w) * att_scores[b]
    # the same weight without flip averaging: half the embedding time (the real-time default)
    plain = w * scores["dlib-resnet"] + (1 - w) * scores["facenet"]
    plain_att = w * att_scores["dlib-resnet"] + (1 - w) * att_scores["facenet"]
    # ... and with flip on dlib's part only: dlib's embedding is the cheap one (the real-time default since the
    # live loop measured inside its budget with it; FaceNet's flip is not)
    dflip = w * scores["dlib-resnet-flip"] + (1 - w) * scores["facenet"]
    dflip_att = w * att_scores["dlib-resnet-flip"] + (1 - w) * att_scores["facenet"]
    for key, s in (("fused-noflip", plain), ("fused-dlibflip", dflip)):
        print(
            f"{key}.w{w:.2f}.eer {eer(s, y)[0]:.4f}\n{key}.w{w:.2f}.tar_at_far_0.001 {tar_at_far(s, y, 1e-3).tar:.4f}"
        )
    for key, s, sa in (
        ("facenet", scores["facenet"], att_scores["facenet"]),
        ("facenet-flip", scores["facenet-flip"], att_scores["facenet-flip"]),
        ("fused", fused, fused_att),
        ("fused-noflip", plain, plain_att),
        ("fused-dlibflip", dflip, dflip_att),
        ("dlib-resnet", scores["dlib-resnet"], att_scores["dlib-resnet"]),
    ):
        for far in (1e-3, 1e-4):
            print(
                f"threshold.{key}.far_{far:g}.celeba_fit {threshold_for_far(s, y, far):.4f}  "
                f"tar {tar_at_far(s, y, far).tar:.4f}"
            )
            print(
                f"threshold.{key}.far_{far:g}.att {threshold_for_far(sa, ay, far):.4f}  "
                f"tar {tar_at_far(sa, ay, far).tar:.4f}"
            )
    print(f"pairs celeba_fit {y.sum()} genuine / {(1 - y).sum()} impostor; att {ay.sum()} / {(1 - ay).sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
